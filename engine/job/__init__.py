"""A job from start to end: workdir, plan, the coordinator, executors, the budget, interrupts,
progress.
"""
