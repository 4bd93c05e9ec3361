"""What a learner can skip: hardware telemetry, TensorBoard, data-parallel training, sweeps, deployment
variants, benchmarks and the amp check. Each stands on the core (and the speedrun) and plugs into training
through :class:`cifarkit.train.Callback`; none of them is needed to train and evaluate a model."""
