"""The experiment harness on top of the library: datasets, reference models,
training loops, checkpoints, experiment records, benchmarks and the ``iexact``
command. Nothing in :mod:`iexact`'s library floors imports from here."""
