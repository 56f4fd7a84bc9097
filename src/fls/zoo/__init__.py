"""Trained agents shipped with the repository: zoo/<entry>/, and the ways into and out of them.

An entry is a finished trained cell in a small form (zoo/README.md; its files are named in
fls.rundir.ZooEntry): the cell's config, status and learning curve, its evaluations' summaries,
the model's weights in fp16 with the facts a checkpoint carries (no optimizer), and its
provenance (the commit, the command that trains it again, the random agent's score measured the
same way, and the SHA-256 of the weights: a weights file that differs is refused).

- entry: read an entry, and install it as the cell <run_root>/zoo/<game>/<model>/seed_<k> that
  `zoo=<entry>` (conf/zoo/<entry>.yaml) makes src/evaluate.py and src/saliency.py open, so a zoo
  agent is evaluated, filmed and scored exactly as any trained cell, its results in a run
  directory, never in the repository;
- further: `src/train.py zoo=<entry>` trains an entry further: its cell starts at the entry's
  update, with the entry's weights and a fresh Adam;
- pack: make an entry from a trained cell, and the table of zoo/README.md;
- `python -m fls.zoo pack|list|table`: the command line.
"""
