"""Stream transforms: the sliding-window average and the worker process that serves it."""
