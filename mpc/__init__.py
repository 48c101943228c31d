"""mpc: additive secret sharing over F_p (p = 2^127 - 1) for n >= 2 nodes and a dealer.

The modules form a stack; each imports only from the ones above it in this list:

1. ``params``, ``errors`` — the frozen parameter object, the exception hierarchy.
2. ``field`` (+ ``_kernels``) — F_p arithmetic on uint64 limb arrays, fixed-point encoding.
3. ``prg`` — AES-CTR keystreams from (seed, label), uniform field elements.
4. ``sharing`` — pure share / reconstruct / zero-sharing functions.
5. ``net`` — the Channel interface, in-process and ZeroMQ implementations.
6. ``triples`` — masks and correlated tuples: the dealer's engine and a node's source.
7. ``context`` — a node's PartyContext for one job (params, channel, tuples, policy).
8. ``shared`` — SharedArray: shares, fixed-point scale, masks; local linear operations.
9. ``truncate``, ``beaver`` — fixed-point truncation; Beaver products with mask reuse.
10. ``reveal`` — the reveal policy: opening to nodes, output to the analyst.
11. ``compare``, ``nonlinear`` — comparisons, normalisation, reciprocal, sqrt, exp, log, sigmoid.

Nothing here knows about genomics (that is ``protocols/``) or about files,
processes and the CLI (that is ``parties/``).
"""
