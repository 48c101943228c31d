"""The ``mpcgwas`` command line.

    mpcgwas keygen --out FILE
    mpcgwas init-study --out DIR [--nodes 3] [--providers site1,site2,site3] [--analysts analyst]
    mpcgwas dealer --study FILE --data DIR
    mpcgwas node --study FILE --id I --data DIR
    mpcgwas submit --study FILE --site DIR --name PROVIDER [--replace] [--pheno-01]
    mpcgwas run --study FILE --out DIR ANALYSIS [analysis options]
    mpcgwas status --study FILE
    mpcgwas simulate --out DIR [--sites 3] [--samples 1000] [--snps 5000] [--seed 0]

A user's mistake (bad file, unknown ID, a party that is down, a refused
request) ends with a one-line ``error:`` message and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from mpc.errors import InputError, MpcError

EXIT_USER_ERROR = 2


def _setup_logging(level: str, log_file=None) -> None:
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=handlers,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)


def _serve(daemon) -> int:
    def stop(signum, frame):
        daemon.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    daemon.serve_forever()
    return 0


def cmd_keygen(args) -> int:
    from parties import keys

    kp = keys.generate()
    keys.write(args.out, kp)
    print(kp.public.decode())
    return 0


def cmd_init_study(args) -> int:
    from parties.analyses import default_policy
    from parties.study import init_study

    policy = default_policy()
    for entry in args.allow:
        name, sep, to = entry.partition("=")
        recipients = [t for t in to.split(",") if t]
        if not sep or not name or not recipients or any(t not in ("nodes", "analyst") for t in recipients):
            raise InputError(f"--allow {entry!r}: expected NAME=nodes|analyst[,...]")
        policy[name] = sorted(set(policy.get(name, [])) | set(recipients))
    path = init_study(args.out, nodes=args.nodes, providers=[p for p in args.providers.split(",") if p],
                      analysts=[a for a in args.analysts.split(",") if a], host=args.host,
                      base_port=args.base_port, curve=not args.plaintext, policy=policy,
                      timeout=args.timeout, block_snps=args.block_snps)
    print(path)
    return 0


def cmd_dealer(args) -> int:
    from parties import study as st
    from parties.dealer import DealerDaemon

    study = st.load(args.study)
    _setup_logging(args.log_level, args.log or Path(args.data) / "dealer.log")
    return _serve(DealerDaemon(study, args.data, args.key))


def cmd_node(args) -> int:
    from parties import study as st
    from parties.node import NodeDaemon

    study = st.load(args.study)
    _setup_logging(args.log_level, args.log or Path(args.data) / f"node{args.id}.log")
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    return _serve(NodeDaemon(study, args.id, args.data, args.key, workers=args.workers))


def cmd_submit(args) -> int:
    from parties import study as st
    from parties.provider import submit

    study = st.load(args.study)
    out = submit(study, args.site, args.name, key_file=args.key, replace=args.replace,
                 pheno_01=args.pheno_01)
    print(f"{args.name}: submitted {out['n_samples']} samples x {out['n_snps']} SNPs "
          f"({', '.join(out['tables']) or 'no tables'}) as {out['submission']}")
    return 0


def cmd_run(args) -> int:
    from parties import study as st
    from parties.analyses import ANALYSES
    from parties.reader import run_analysis

    if not args.study or not args.out:
        raise InputError("mpcgwas run needs --study FILE and --out DIR")
    study = st.load(args.study)
    spec = ANALYSES[args.analysis]
    options = {opt.lstrip("-").replace("-", "_"): getattr(args, opt.lstrip("-").replace("-", "_"))
               for opt, _ in spec.options}
    summary = run_analysis(study, args.analysis, options, args.out, me=args.as_, key_file=args.key,
                           progress=not args.no_progress)
    headline = {k: v for k, v in summary.items()
                if k not in ("reveals", "traffic_bytes_sent", "rounds", "hops", "phases")}
    print(json.dumps({args.analysis: headline}, indent=1, default=str))
    print(f"results in {Path(args.out).resolve()}")
    return 0


def cmd_status(args) -> int:
    from parties import study as st
    from parties.service import ClientContext

    study = st.load(args.study)
    me = args.as_ or next(iter(study.analysts))
    client = ClientContext(study, me, args.key)
    try:
        for i in range(study.n_nodes):
            reply, _ = client.node(i, timeout=10.0).call({"cmd": "status"})
            print(json.dumps({reply["node"]: reply["submissions"], "busy": reply["busy"]}, indent=1))
    finally:
        client.close()
    return 0


def cmd_wait(args) -> int:
    import time

    from parties import study as st
    from parties.service import ClientContext, ServiceError

    study = st.load(args.study)
    me = args.as_ or next(iter(study.analysts))
    deadline = time.monotonic() + args.timeout
    client = ClientContext(study, me, args.key)
    try:
        targets = [("dealer", client.dealer)] + [(n.name, lambda i=i: client.node(i)) for i, n in
                                                   enumerate(study.nodes)]
        for name, make in targets:
            while True:
                c = make()
                try:
                    c.call({"cmd": "ping"}, timeout=1.0)
                    break
                except ServiceError:
                    if time.monotonic() > deadline:
                        raise ServiceError(f"{name} did not answer within {args.timeout:g} s") from None
                finally:
                    c.sock.close(linger=0)
    finally:
        client.close()
    return 0


def cmd_simulate(args) -> int:
    from parties.simulate import simulate

    simulate(out_dir=args.out, sites=args.sites, samples=args.samples, snps=args.snps, seed=args.seed,
             n_causal=args.causal, missing_rate=args.missing_rate)
    print(args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from parties.analyses import ANALYSES

    p = argparse.ArgumentParser(prog="mpcgwas", description="Secure multiparty GWAS, logistic regression "
                                "and log-rank tests over secret-shared data.")
    p.add_argument("--log-level", default="INFO")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("keygen", help="write a CurveZMQ key pair")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_keygen)

    s = sub.add_parser("init-study", help="write a local study (all keys) for n nodes on one host")
    s.add_argument("--out", required=True)
    s.add_argument("--nodes", type=int, default=3)
    s.add_argument("--providers", default="site1,site2,site3")
    s.add_argument("--analysts", default="analyst")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--base-port", type=int, default=None)
    s.add_argument("--timeout", type=float, default=10.0)
    s.add_argument("--block-snps", type=int, default=1024)
    s.add_argument("--plaintext", action="store_true", help="no CurveZMQ (benchmarks on loopback only)")
    s.add_argument("--allow", action="append", default=[], metavar="NAME=RECIPIENTS",
                   help="add a reveal-policy entry, e.g. logrank.km=analyst (repeatable)")
    s.set_defaults(fn=cmd_init_study)

    for role in ("dealer", "node"):
        s = sub.add_parser(role, help=f"run the {role} daemon")
        s.add_argument("--study", required=True)
        s.add_argument("--data", required=True)
        s.add_argument("--key", default=None)
        s.add_argument("--log", default=None)
        if role == "node":
            s.add_argument("--id", type=int, required=True)
            s.add_argument("--workers", type=int, default=1,
                           help="threads for the block products of genotype passes (e.g. the node's cores)")
        s.set_defaults(fn=cmd_dealer if role == "dealer" else cmd_node)

    s = sub.add_parser("submit", help="secret-share a site folder with the nodes")
    s.add_argument("--study", required=True)
    s.add_argument("--site", required=True)
    s.add_argument("--name", required=True, help="the provider name in the study file")
    s.add_argument("--key", default=None)
    s.add_argument("--replace", action="store_true", help="replace this provider's earlier submission")
    s.add_argument("--pheno-01", action="store_true", help="binary phenotypes coded 0 = control, 1 = case")
    s.set_defaults(fn=cmd_submit)

    s = sub.add_parser("run", help="run an analysis and write its results")

    def common(parser, suppress):
        kw = {"default": argparse.SUPPRESS} if suppress else {}
        parser.add_argument("--study", **({} if suppress else {"default": None}), **kw)
        parser.add_argument("--out", **({} if suppress else {"default": None}), **kw)
        parser.add_argument("--as", dest="as_", help="analyst name (default: the first)",
                            **({} if suppress else {"default": None}), **kw)
        parser.add_argument("--key", **({} if suppress else {"default": None}), **kw)
        parser.add_argument("--no-progress", action="store_true", **kw)

    common(s, suppress=False)
    runs = s.add_subparsers(dest="analysis", required=True)
    # Every analysis accepts every analysis option (so a script can pass one set of
    # options to several analyses); each analysis reads only its own.
    all_options, users = {}, {}
    for name, spec in ANALYSES.items():
        for flag, kwargs in spec.options:
            all_options.setdefault(flag, kwargs)
            users.setdefault(flag, []).append(name)
    for name, spec in ANALYSES.items():
        r = runs.add_parser(name, help=spec.help)
        common(r, suppress=True)  # accepted after the analysis name too
        for flag, kwargs in all_options.items():
            kw = dict(kwargs)
            kw["help"] = (kw.get("help", "") + f" [{', '.join(users[flag])}]").strip()
            r.add_argument(flag, **kw)
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("wait", help="wait until the dealer and every node answer")
    s.add_argument("--study", required=True)
    s.add_argument("--as", dest="as_", default=None)
    s.add_argument("--key", default=None)
    s.add_argument("--timeout", type=float, default=30.0)
    s.set_defaults(fn=cmd_wait)

    s = sub.add_parser("status", help="what each node holds")
    s.add_argument("--study", required=True)
    s.add_argument("--as", dest="as_", default=None)
    s.add_argument("--key", default=None)
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("simulate", help="write a simulated structured cohort as site folders")
    s.add_argument("--out", required=True)
    s.add_argument("--sites", type=int, default=3)
    s.add_argument("--samples", type=int, default=1000)
    s.add_argument("--snps", type=int, default=5000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--causal", type=int, default=5)
    s.add_argument("--missing-rate", type=float, default=0.01)
    s.set_defaults(fn=cmd_simulate)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in ("dealer", "node"):
        _setup_logging("WARNING" if args.log_level == "INFO" else args.log_level)
    try:
        return args.fn(args)
    except MpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
