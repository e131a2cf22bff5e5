"""The data: data directories, the data manifest, and getting the benchmark files into a folder and checking them.

A data directory has the layout of the project's `shared/data` (see the README's Data section); it is chosen with
`--data-dir` or BENCH_DATA_DIR. The manifest (manifest.toml, shipped with bench) lists every file of the layout
with its public source, size, sha256 and licence. A source, a mirror or the hub is not trusted: sizes, paths and
hashes come from the manifest; bench never writes, renames or deletes through a symbolic link in a data directory.

Modules, each one concern, listed bottom up (each imports only modules above it in this list):
  manifest   reading the manifest and checking its schema when it is read (known fields and types, paths
             confined to the data directory, groups, archives, inputs); `group_of` a file. The bottom.
  paths      data directories and reading their files: finding a file (a missing one names the
             `bench data fetch` group that provides it), UTF-8 text, JSON, CSV rows, fingerprints, sha256.
             What metrics and methods import.
  download   HTTP(S) transfers bounded by the manifest (size caps, Range resume only when Content-Range continues
             the part, a deadline per file), the run's memory of unreachable hosts, the `.partial` folder, the
             symbolic-link refusal, and `place`: checking finished bytes and moving them into place.
  archives   one member out of a zip archive, checked (kind, path, size) before and capped during extraction.
  hub        the Hugging Face route (a dataset file through the hub cache, a whole dataset as one CSV) and the
             conversions (GLUE's MRPC split from the Microsoft release).
  fetch      `bench data fetch`'s work: which files are missing, by which route each comes, what became of each.
  verify     `bench data verify`'s work: a folder compared with the manifest.
  cli        the `bench data fetch | verify | list` commands: parse, call the modules above, print.

What this package may import: the standard library, bench.errors, bench.files and bench.progress, and (when a route needs
them, inside the function) huggingface_hub and datasets. Never bench.run, bench.engines, bench.models, bench's
synthetic world, a plugin (methods, metrics) or a report: they import the data package, not the other way round.
Nothing here knows a metric or a method.
"""
