"""Beyond training and evaluating a model: hardware telemetry, TensorBoard, data-parallel training, sweeps,
deployment variants, transfer learning, the learning-rate finder, benchmarks, the amp check and these tools'
settings (:mod:`cifarkit.tools.settings`). Each stands on the core (and the speedrun) and plugs into training
through :class:`cifarkit.train.Callback`; none of them is needed to train and evaluate a model."""
