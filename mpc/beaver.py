"""Products of secrets with Beaver's method and masked-operand reuse.

For x = d_x + a and y = d_y + b, with a, b seed-shared masks and d public,

    x * y = d_x d_y + d_x b + a d_y + a b,

so a node's share is ``c_i + d_x b_i + a_i d_y`` (plus ``d_x d_y`` on the
leading node), where ``c = a b`` comes from the dealer (mpc.triples); with
y = d_y + b this is ``c_i + d_x y_i + a_i d_y``, one product fewer.  The same
identities hold for matrix products and for squares (b = a).

Protocol for a batch of products (``products``):

1. Every operand that has no mask gets a fresh one: a_i from the seeds,
   d_i = x_i - a_i.
2. Node n-1 asks the dealer for every ``c`` of the batch (one request).
3. One round: all d_i are opened together; d = x - a is uniformly masked, so
   opening it reveals nothing.  The operand keeps its mask: every later
   product with it skips step 3 for that operand (masked-operand reuse).
4. Each node combines locally.

Rounds: 1 per batch (0 if every operand is already masked).  Dealer traffic:
one element per output element, to node n-1 only.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from mpc import field
from mpc.shared import Mask, SharedArray
from mpc.triples import MaskSpec
from mpc.truncate import plan_truncation, truncate_many


def _mask_share(x: SharedArray):
    """This node's share a_i of x's mask."""
    if x._share is None:
        return x.ctx.tuples.mask(x.mask.spec)
    return field.sub(x.share, x.mask.d) if x.ctx.leads else x.share


def fresh_mask_spec(ctx, x) -> MaskSpec:
    """A new dealer mask for x (pass it to mask_many): products with x can be
    requested before x is masked."""
    return new_mask_spec(ctx, x.shape)


def new_mask_spec(ctx, shape) -> MaskSpec:
    """A new dealer mask for a value of this shape that does not exist yet."""
    return MaskSpec("dealer", ctx.label("m"), tuple(shape))


def mask_many(ctx, xs, specs=None) -> None:
    """Give every array in xs a mask (one round for all that lack one); `specs`
    (from fresh_mask_spec, one per x) chooses the masks."""
    todo, seen = [], set()
    chosen = {} if specs is None else {id(x): s for x, s in zip(xs, specs)}
    for x in xs:
        if x.mask is None and id(x) not in seen:
            seen.add(id(x))
            todo.append(x)
    if not todo:
        return
    specs, d_shares = [], []
    for x in todo:
        spec = chosen.get(id(x)) or fresh_mask_spec(ctx, x)
        a = ctx.tuples.mask(spec)
        specs.append(spec)
        d_shares.append(field.sub(x.share, a))
    for x, spec, d in zip(todo, specs, ctx.open_many(d_shares, tag="mask")):
        x.mask = Mask(spec, d)


def products(ctx, items) -> list:
    """Evaluate a batch of products in one round.

    Parameters
    ----------
    items : list of (op, x, y)
        op is "mul" (elementwise, equal shapes), "square" (y ignored) or
        "matmul" (2-D, x @ y).

    Returns
    -------
    list of SharedArray, frac = x.frac + y.frac (2 x.frac for squares).
    """
    operands = []
    for op, x, y in items:
        operands.append(x)
        if op != "square":
            operands.append(y)
    fresh = [x for x in operands if x.mask is None]
    # Steps 1-2: assign masks first so the dealer can start on c during the opening.
    pre_specs = {}
    for x in fresh:
        if id(x) not in pre_specs:
            pre_specs[id(x)] = MaskSpec("dealer", ctx.label("m"), x.shape)

    def spec_of(x):
        return x.mask.spec if x.mask is not None else pre_specs[id(x)]

    pending = []
    for op, x, y in items:
        if op == "square":
            out_shape = x.shape
            req = dict(op="square", a=spec_of(x).to_wire(), out=list(out_shape))
        elif op == "mul":
            if x.shape != y.shape:
                raise ValueError(f"mul: shapes {x.shape} and {y.shape} differ")
            out_shape = x.shape
            req = dict(op="mul", a=spec_of(x).to_wire(), b=spec_of(y).to_wire(), out=list(out_shape))
        elif op == "matmul":
            if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[0]:
                raise ValueError(f"matmul: shapes {x.shape} and {y.shape} do not chain")
            out_shape = (x.shape[0], y.shape[1])
            req = dict(op="matmul", a=spec_of(x).to_wire(), b=spec_of(y).to_wire(), out=list(out_shape))
        else:
            raise ValueError(f"unknown product op {op!r}")
        pending.append(ctx.tuples.request("product", ctx.label("p"), **req))

    # Step 3: one opening for every fresh operand.
    if fresh:
        unique = list({id(x): x for x in fresh}.values())
        d_shares = []
        for x in unique:
            a = ctx.tuples.mask(pre_specs[id(x)])
            d_shares.append(field.sub(x.share, a))
        for x, d in zip(unique, ctx.open_many(d_shares, tag="beaver")):
            x.mask = Mask(pre_specs[id(x)], d)
    else:
        ctx.tuples.flush()

    # Step 4: local combination (see _combine).
    return [SharedArray(ctx, _combine(ctx, op, x, y, tup["c"]),
                        2 * x.frac if op == "square" else x.frac + y.frac)
            for (op, x, y), tup in zip(items, pending)]


def request_product(ctx, op: str, spec_x: MaskSpec, spec_y: MaskSpec | None, out_shape):
    """Ask the dealer now for the c of a product whose operands will carry these
    masks (for instance the outputs of truncations planned but not yet done,
    mpc.truncate.plan_truncation): the request travels before the values
    exist, so the dealer's answer is there when they do.  Finish with
    combine()."""
    req = dict(op=op, a=spec_x.to_wire(), out=list(out_shape))
    if op != "square":
        req["b"] = spec_y.to_wire()
    return ctx.tuples.request("product", ctx.label("p"), **req)


def combine(ctx, op: str, x: SharedArray, y: SharedArray | None, pending) -> SharedArray:
    """x * y, x ** 2 or x @ y from a request_product made with x's and y's mask specs."""
    return SharedArray(ctx, _combine(ctx, op, x, y, pending["c"]),
                       2 * x.frac if op == "square" else x.frac + y.frac)


def _combine(ctx, op, x, y, c):
    """This node's share of x * y, x ** 2 or x @ y from c and the opened d's.

    With x = d_x + a and y = d_y + b, the product is c + d_x y + a d_y: two
    products per node when y's share is at hand (or, symmetrically,
    c + x d_y + d_x b), instead of the three of c + d_x b + a d_y + d_x d_y
    on the leading node.  A square is c + d (a + x), one product.  Shares of
    a mask are a_i = x_i - d on the leading node and x_i elsewhere
    (_mask_share), or the seeded mask share when x has no share yet.
    """
    dx = x.mask.d
    if op == "square":
        a = _mask_share(x)
        s = field.add(a, a)  # a + x = 2 a (+ d on the leading node)
        if ctx.leads:
            field.add(s, dx, out=s)
        return field.add(c, field.mul(dx, s))
    dy = y.mask.d
    if op == "mul":
        if y._share is not None:
            return field.beaver_combine(c, dx, y.share, dy, _mask_share(x), False)
        if x._share is not None:
            return field.beaver_combine(c, dy, x.share, dx, _mask_share(y), False)
        return field.beaver_combine(c, dx, _mask_share(y), dy, _mask_share(x), ctx.leads)
    if y._share is not None:
        z = field.add(c, field.matmul(dx, y.share))
        return field.add(z, field.matmul(_mask_share(x), dy), out=z)
    if x._share is not None:
        z = field.add(c, field.matmul(x.share, dy))
        return field.add(z, field.matmul(dx, _mask_share(y)), out=z)
    z = field.add(c, field.matmul(dx, _mask_share(y)))
    field.add(z, field.matmul(_mask_share(x), dy), out=z)
    if ctx.leads:
        field.add(z, field.matmul(dx, dy), out=z)
    return z


def _pair_term(ctx, x: SharedArray, y: SharedArray):
    """This node's local term of x @ y in a matmul sum (without the dealer's c)."""
    src = x.mask.source if x._share is None else None
    if src is not None:
        # x is the transpose of a seeded, not yet loaded operand (a genotype block in
        # Zᵀ Q): multiply its untransposed d and mask share with matmul_tn instead of
        # materialising two transposed copies.
        dx, ax, mm = src.d, ctx.tuples.mask(src.spec), field.matmul_tn
    else:
        dx, ax, mm = x.mask.d, _mask_share(x), field.matmul
    dy = y.mask.d
    t = mm(dx, _mask_share(y))
    field.add(t, mm(ax, dy), out=t)
    if ctx.leads:
        field.add(t, mm(dx, dy), out=t)
    return t


class MatmulSum:
    """A pending Σ_k x_k @ y_k (start_matmul_sum); finish() computes it."""

    def __init__(self, ctx, pairs, tup):
        self.ctx, self.pairs, self.tup = ctx, pairs, tup
        self.frac = pairs[0][0].frac + pairs[0][1].frac

    def finish(self) -> SharedArray:
        """Local terms pair by pair (each operand's public part is read, used and
        dropped in turn), then the dealer's correction."""
        return finish_all(self.ctx, [self])[0]


def finish_all(ctx, sums) -> list:
    """finish() of several MatmulSums, their pairs' local terms on ``ctx.workers``
    threads (the field kernels release the GIL; each thread holds one block's
    operands at a time).  Field sums are exact, so the result does not depend
    on the order the terms arrive in."""
    jobs = []
    for i, h in enumerate(sums):        # the jobs hold the only references to the operands
        jobs += [(i, x, y) for x, y in h.pairs]
        h.pairs = None
    totals = [None] * len(sums)
    jobs.reverse()

    def add(i, t):
        totals[i] = t if totals[i] is None else field.add(totals[i], t, out=totals[i])

    workers = max(1, int(getattr(ctx, "workers", 1)))
    if workers == 1 or len(jobs) < 2:
        while jobs:               # pop as we go: a used operand (and its loaded d) is freed
            i, x, y = jobs.pop()
            add(i, _pair_term(ctx, x, y))
            del x, y
    else:
        lock = threading.Lock()

        def run():
            while True:
                with lock:
                    if not jobs:
                        return
                    i, x, y = jobs.pop()
                try:
                    t = _pair_term(ctx, x, y)
                except BaseException:
                    with lock:
                        jobs.clear()    # the others stop at their next pair
                    raise
                del x, y
                with lock:
                    add(i, t)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for f in [pool.submit(run) for _ in range(workers)]:
                f.result()              # re-raises a worker's exception
    out = []
    for h, z in zip(sums, totals):
        field.add(z, h.tup["c"], out=z)
        out.append(SharedArray(ctx, z, h.frac))
    return out


def start_matmul_sum(ctx, pairs) -> MatmulSum:
    """Ask for Σ_k x_k @ y_k: one dealer correction for the whole sum.

    Operands without a mask are masked first (one round); then node n-1 sends
    the request at once, so the dealer streams the pairs while the nodes start
    theirs.  Call finish() on the result.  All x_k @ y_k must have one shape
    and the same frac."""
    pairs = list(pairs)
    shapes = {(x.shape[0], y.shape[1]) for x, y in pairs}
    if len(shapes) != 1 or any(x.shape[1] != y.shape[0] for x, y in pairs):
        raise ValueError(f"matmul_sum: the products do not share one output shape: {sorted(shapes)}")
    mask_many(ctx, [v for pair in pairs for v in pair])
    tup = request_matmul_sum(ctx, [(x.mask.spec, y.mask.spec) for x, y in pairs], shapes.pop())
    ctx.tuples.flush()
    return MatmulSum(ctx, pairs, tup)


def request_matmul_sum(ctx, spec_pairs, out_shape):
    """Ask now for the correction of Σ_k x_k @ y_k from the operands' mask specs
    (operands that may not exist yet, e.g. a planned truncation's output);
    later MatmulSum(ctx, pairs, returned request) computes it."""
    wire = [[a.to_wire(), b.to_wire()] for a, b in spec_pairs]
    return ctx.tuples.request("product", ctx.label("s"), op="matmul_sum", pairs=wire, out=list(out_shape))


def matmul_sum(ctx, pairs) -> SharedArray:
    """Σ_k x_k @ y_k with one dealer correction (see start_matmul_sum)."""
    return start_matmul_sum(ctx, pairs).finish()


def mul(x: SharedArray, y: SharedArray) -> SharedArray:
    return products(x.ctx, [("mul", x, y)])[0]


def square(x: SharedArray) -> SharedArray:
    return products(x.ctx, [("square", x, None)])[0]


def matmul(x: SharedArray, y: SharedArray) -> SharedArray:
    return products(x.ctx, [("matmul", x, y)])[0]


def mul_many(ctx, pairs) -> list:
    return products(ctx, [("mul", x, y) for x, y in pairs])


def product_shape(op: str, x: SharedArray, y: SharedArray | None) -> tuple:
    """(shape, frac) of a product item's result, before any truncation: for
    planning its truncation before the product exists.  "bmatmul" is a batch
    of matrix products (protocols.logistic)."""
    if op == "square":
        return x.shape, 2 * x.frac
    if op == "matmul":
        return (x.shape[0], y.shape[1]), x.frac + y.frac
    if op == "bmatmul":
        return (x.shape[0], x.shape[1], y.shape[2]), x.frac + y.frac
    return x.shape, x.frac + y.frac


def fixed_products(ctx, items, frac: int | None = None, fmt=None) -> list:
    """Products followed by truncation back to `frac` fractional bits: two
    rounds for the whole batch.

    Parameters
    ----------
    frac : int, optional
        Fractional bits of the results (default fmt.f, else params.f).
    fmt : Params, optional
        Fixed-point format of the results: every result must satisfy
        |value| < 2^(fmt.k - 1 - frac), which bounds the truncation's input.
        Default: the study's params.
    """
    fmt = ctx.params if fmt is None else fmt
    frac = fmt.f if frac is None else frac
    # The truncation pairs are requested with the products' c (one dealer message,
    # answered while the products' operands are opened or combined).
    plans = []
    for op, x, y in items:
        shape, pfrac = product_shape(op, x, y)
        m = pfrac - frac
        plans.append(plan_truncation(ctx, shape, m, fmt.k - fmt.f + frac + m) if m > 0 else None)
    raw = products(ctx, items)
    return truncate_many(ctx, raw, [z.frac - frac for z in raw], plans=plans)


def fmul(x: SharedArray, y: SharedArray, frac: int | None = None, fmt=None) -> SharedArray:
    return fixed_products(x.ctx, [("mul", x, y)], frac, fmt)[0]


def fmatmul(x: SharedArray, y: SharedArray, frac: int | None = None, fmt=None) -> SharedArray:
    return fixed_products(x.ctx, [("matmul", x, y)], frac, fmt)[0]


def fsquare(x: SharedArray, frac: int | None = None, fmt=None) -> SharedArray:
    return fixed_products(x.ctx, [("square", x, None)], frac, fmt)[0]
