"""What the notebooks call to show and explain a run: notebook helpers, the series runner that writes the
report folder, figures, tables, generated commentary, data exploration and run comparison. It sits at the
top because a notebook uses everything below it."""
