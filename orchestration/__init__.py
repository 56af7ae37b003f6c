"""The orchestration of a job, above every method, metric and report: the runner and its parts (samples, resume
checks, records), scoring a folder of edits (evaluation.py), the checks of a job's configuration and of which
inversion and editor compose (job_config.py, compatibility.py), the sweep's inversion cache, the loggers, the
command-line helpers and Hydra callbacks and resolvers. launch.py, aggregate.py, score.py and the Hydra plugins sit on
top of it."""
