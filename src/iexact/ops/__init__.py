r"""iexact's operators registered with ``torch.library``, one module per job.

Compressing reads a seed stream, computes quantization levels, runs chunked
loops and Triton kernels; redrawing a dropout mask restores a generator
snapshot; normalizing a graph inspects its edges: nothing ``torch.compile``
should trace. Registered as custom operators with fake (shape-only)
implementations, each is one opaque node of a compiled graph, so a
compressed model compiles without graph breaks and runs the same code
eagerly and compiled:

- :mod:`iexact.ops.graph` — ``iexact::gcn_norm``, below the codec;
- :mod:`iexact.ops.dropout` — ``iexact::dropout_keep`` / ``iexact::dropout_redraw``;
- :mod:`iexact.ops.codec` — ``iexact::compress``, ``iexact::decompress`` and
  ``iexact::transpose_products`` above :mod:`iexact.codec`.

The package imports none of them, so importing one does not import the others.
"""
