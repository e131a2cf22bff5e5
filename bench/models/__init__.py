"""The model under test: a Subject (model, tokenizer, capabilities, identity) and everything done with its
weights that metrics and methods share.

  subject      Subject: capabilities (MLM, EMBED, FINETUNE), identity for cache keys, representation and output
               transforms, weight edits
  loading      model names (aliases, hub ids, local dirs, `random:`, registered kinds such as `synthetic`) to
               Subjects; `light_subject` (identity without weights); devices
  batching     how inputs of different lengths are grouped into forward passes (token-bounded)
  scoring      batched masked-token log-probabilities
  embeddings   batched sentence embeddings (last hidden states)
  finetune     fine-tuning with a task head (GLUE, SuperGLUE)
  mlm_data, mlm_training
               masked-LM training data and the one MLM training loop (synthetic world, CDA, Dropout)

A new model kind (e.g. causal LMs) goes here: a loader registered under the `bench.models` entry-point group
(or `@register_model`), a capability for what it can do, and its scoring primitive beside `scoring`. Metrics
declare the capability they need; a subject without it gets an n/a cell. Imports: the contracts (bench.api,
bench.registry, bench.errors, bench.cache, bench.files, bench.data); never bench.run, engines, plugins or reports.
"""
