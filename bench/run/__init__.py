"""A run: from a request to the rows of a run directory.

Modules, bottom up (each imports only modules above it in this list, and the layers below bench.run):
  checks     what a request must satisfy before anything is loaded: seeds, [stats], bootstrap memory, cache folder
  suite      suite files (suites/*.toml or a path): read and checked
  schema     the one schema of results rows and manifests, checked on every read
  lock       one writer per run directory (OUT/.bench-lock)
  store      a run directory: manifest.json and results.jsonl, resumable, written atomically
  request    RunRequest: built from flags and a suite in one place, normalised and checked
  plan       the units of a request (model x chain x seed), what each waits for; --dry-run's description
  rows       every row a run writes: per seed, over seeds, n/a, error
  unit       the unit worker (load, debias, score one unit) and `work`, a remote engine's worker entry point
  check      `bench check`: a run against a baseline
  collector  the driver's side: results in any order in, results.jsonl in plan order out, aggregates over seeds
  runner     the driver: the unit worker of this process plus the run directory and the outcome

The engines (bench.engines) are below: the driver hands them a Job and the collector, and they never see it.
Methods, metrics and reports are above: nothing here names one; plugins come from bench.registry.
"""
