"""`edged eval liveness`: APCER / BPCER of the passive liveness cues (logic in `edged.eval.liveness`)."""

from __future__ import annotations

import argparse
from typing import Any

from edged.cli.common import Context, json_option
from edged.errors import UsageError


def register_liveness(bench: argparse._SubParsersAction) -> None:
    """Add `liveness` to `edged eval`."""
    q = bench.add_parser(
        "liveness", help="passive liveness: APCER/BPCER per cue (texture, blink, parallax) and combined",
        description="Run presentations (real people and attacks) through face following, dlib 68-point landmarks "
                    "and the liveness cues as the daemon would, and report APCER (attacks accepted) and BPCER (real "
                    "people refused) per cue and combined, time to verdict and cost. Inputs: --data DIR with "
                    "real/ and attack/ subfolders of videos or photos, and/or synthetic attacks made from photos "
                    "(--synthetic-photos N --photos DIR) and from real clips (--synthetic-replays N --clips DIR); "
                    "--clips also adds the clips themselves as real presentations.")
    q.add_argument("--data", metavar="DIR", help="labelled inputs: DIR/real/* and DIR/attack/* (videos, photos)")
    q.add_argument("--synthetic-photos", type=int, default=0, metavar="N",
                   help="N printed-photo attack videos, each from a different person's photo in --photos")
    q.add_argument("--photos", metavar="DIR", help="photos for --synthetic-photos: one folder per person "
                                                   "(LFW layout, the first photo of each) or a flat folder")
    q.add_argument("--synthetic-replays", type=int, default=0, metavar="N",
                   help="N screen-replay attack videos of the real clips in --clips")
    q.add_argument("--clips", metavar="DIR", help="real videos (of live people): replayed by --synthetic-replays "
                                                  "and evaluated as real presentations")
    q.add_argument("--seed", type=int, default=0, help="seed of the photo choice and the synthetic attacks")
    q.add_argument("--seconds", type=float, metavar="S",
                   help="judge each presentation on its first S seconds after the face appears (default: all)")
    q.add_argument("--require", choices=("texture+motion", "texture+blink", "texture", "motion"),
                   help="override liveness.require")
    q.add_argument("--texture-every-n", type=int, metavar="N", help="override liveness.texture_every_n")
    q.add_argument("--landmark-stages", type=int, metavar="N", help="override liveness.landmark_stages")
    q.add_argument("--landmark-trees", type=int, metavar="N", help="override liveness.landmark_trees")
    q.add_argument("--upsample", type=int, default=0, choices=(0, 1, 2), help="HOG upsampling (default 0)")
    q.add_argument("--list", action="store_true", help="also print one line per presentation")
    json_option(q)
    q.set_defaults(func=cmd_eval_liveness)


def cmd_eval_liveness(ctx: Context) -> int:
    from edged.eval import liveness as ev

    args = ctx.args
    cfg = ctx.config.liveness
    changes: dict[str, Any] = {}
    if args.require:
        changes["require"] = args.require
    if args.texture_every_n is not None:
        changes["texture_every_n"] = args.texture_every_n
    for key in ("landmark_stages", "landmark_trees"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if changes:
        from pydantic import ValidationError

        try:
            cfg = type(cfg).model_validate({**cfg.model_dump(), **changes})
        except ValidationError as exc:
            first = exc.errors()[0]
            key = str(first["loc"][0]) if first["loc"] else "?"
            raise UsageError(f"--{key.replace('_', '-')} {changes.get(key)}: {first['msg'].lower()}") from None
    if args.synthetic_photos < 0 or args.synthetic_replays < 0:
        raise ev.LivenessEvalError("--synthetic-photos and --synthetic-replays must be >= 0")
    if args.seconds is not None and args.seconds <= 0:
        raise ev.LivenessEvalError(f"--seconds {args.seconds}: must be > 0")
    presentations: list[ev.Presentation] = []
    if args.data:
        presentations += ev.labelled_inputs(args.data)
    clips = ev.clips_in(args.clips) if args.clips else []
    presentations += ev.real_clip_inputs(clips)
    if args.synthetic_photos:
        if not args.photos:
            raise ev.LivenessEvalError("--synthetic-photos needs --photos DIR (e.g. LFW's lfw-deepfunneled)")
        presentations += ev.synthetic_photo_inputs(ev.pick_photos(args.photos, args.synthetic_photos, args.seed),
                                                   args.seed)
    if args.synthetic_replays:
        presentations += ev.synthetic_replay_inputs(clips, args.synthetic_replays, args.seed)
    if not presentations:
        raise ev.LivenessEvalError("nothing to evaluate: give --data, --clips, --synthetic-photos or "
                                   "--synthetic-replays")
    texture = None
    if cfg.require != "motion":
        from edged.models.liveness import texture_model

        texture = texture_model(ctx.config, ctx.models_dir())
    from edged.models.liveness import landmark_predictor

    analysers = ev.Analysers.load(texture, args.upsample, landmark_predictor(ctx.config, ctx.models_dir(), cfg))
    with ctx.progress(len(presentations), "liveness") as bar:
        results, report = ev.evaluate(presentations, analysers, cfg, args.seconds, bar.update)
    if ctx.json:
        ctx.emit_json({**report, "results": [r.as_dict() for r in results]})
        return 0
    _print(ctx, report, results if args.list else [])
    return 0


def _pct(x: float | None) -> str:
    return "   -  " if x is None else f"{100 * x:5.1f}%"


def _print(ctx: Context, r: dict[str, Any], rows: list[Any]) -> None:
    cfg = r["config"]
    ctx.print(f"liveness: require {cfg['require']}, texture >= {cfg['texture_min']}, parallax >= "
              f"{cfg['parallax_min']}, motion within {cfg['max_seconds']} s; {r['presentations']} presentations"
              + (f", first {r['seconds']} s of each" if r["seconds"] else ""))
    header = f"{'presentations':<22} {'n':>4}  " + "  ".join(f"{c:>15}" for c in ("texture", "blink", "parallax",
                                                                                  "motion", "combined"))
    ctx.print(header)
    ctx.print(f"{'':<22} {'':>4}  " + "  ".join(f"{'APCER  BPCER':>15}" for _ in range(5)))
    groups = [("all (videos)", r["all"])] + [(k, t) for k, t in r["by_kind"].items()]
    for name, t in groups:
        cells = []
        for cue in ("texture", "blink", "parallax", "motion", "combined"):
            c = t[cue]
            cells.append(f"{_pct(c['apcer'])} {_pct(c['bpcer'])}")
        ctx.print(f"{name:<22} {t['attacks'] + t['real']:>4}  " + "  ".join(f"{c:>15}" for c in cells))
    live, refuse = r["time_to_live_s"], r["time_to_refuse_s"]
    if live["n"]:
        ctx.print(f"real people judged live after {live['median']:.2f} s (median), {live['max']:.2f} s (max), "
                  f"{live['n']} presentations")
    if refuse["n"]:
        ctx.print(f"attacks refused after {refuse['median']:.2f} s (median), {refuse['max']:.2f} s (max)")
    cost = r["cost_ms"]
    if cost["update_per_frame"]["n"]:
        ctx.print(f"cost per tracked face per checked frame: {cost['update_per_frame']['mean']:.2f} ms mean "
                  f"(texture {cost['texture_call']['mean'] or 0:.1f} ms per call, every "
                  f"{cfg['texture_every_n']} frames)")
    if r["no_face"]:
        ctx.print(f"no face found in {len(r['no_face'])}: {', '.join(r['no_face'][:5])}")
    for row in rows:
        v = row.verdict
        ctx.print(f"  {row.label:<6} {row.kind:<16} {'ACCEPTED' if row.accepted else 'refused ':<8} "
                  f"{row.name[:60]:<60} " + (" ".join(v.reasons[:3]) if v else "no face"))
