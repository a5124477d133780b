"""The run shell: the outer loop every run shares, whatever acts.

``shell.run(path, settings, workdir, log, progress_fn)`` takes an acting path
(``shell.ActingPath``: on-device gymnax envs, ``jaxrl_dist.anakin.training``, or host
actor threads, ``jaxrl_dist.sebulba.training``) through the same named steps:
check the settings, resume (identity check, restore), open the run files,
prepare (initial state, compile), train (log points: records, progress, finite
guard, checkpoint cadence), evaluate, and finish (final params, summary, plot).

  settings  ``RunSettings`` and the log/checkpoint cadence.
  files     metrics history, writers, the checkpoint identity check on resume.
  config_file  config.json's one writer and one reader (and the --resume check of it).
  progress  the console progress line (one ``progress_fn``).
  shell     the ``ActingPath`` protocol and ``run``.
  memory    the device memory a run needs, checked before compiling.
  shared_dir  the start-up check that every process sees the same --workdir.
  sigterm   SIGTERM ends a run as Ctrl-C does, and the process within 10 s; deferred()
            holds SIGTERM and Ctrl-C until a checkpoint save ends.
"""
