"""Collect the demos' reports from runs/<folder>/ into demos/RESULTS.md and demos/results/.

Run after the demos, from the repository root::

    python demos/_results_page.py            # reads runs/*/results.json

Pictures named in PICTURES are copied to demos/results/<folder>/ (kept small: they are committed);
the page links them relatively. Numbers are copied from results.json as measured, never edited.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import _common as C

#: Run folders (``runs/<folder>``) in the order the page shows them: the paper's quantitative
#: claims on real data (--paper-cpu), the full-mode runs made on a CPU, then the quick runs.
ORDER = [
    "step_size_paper_cpu",
    "reconstruction_paper_cpu",
    "inpainting_paper_cpu",
    "compressed_sensing_paper_cpu",
    "error_curves_paper_cpu",
    "texture_full",
    "sound_full",
    "objects_full",
    "texture",
    "sound",
    "objects",
    "dynamic_texture",
    "inpainting",
    "compressed_sensing",
    "reconstruction",
    "error_curves",
]
PICTURES = {
    "step_size_paper_cpu": ["step_size_energy.png"],
    "reconstruction_paper_cpu": ["crossover.png", "reconstruction_paper_cpu.png"],
    "inpainting_paper_cpu": [
        "inpainting_paper_cpu_P5.png",
        "inpainting_paper_cpu_P9.png",
        "inpainting_paper_cpu_M30.png",
    ],
    "compressed_sensing_paper_cpu": [
        "cs_paper_cpu.png",
        "cs_paper_cpu_m100_shared.png",
        "cs_paper_cpu_m100_per_image.png",
    ],
    "error_curves_paper_cpu": ["error_curves_paper_cpu.png"],
    "texture_full": ["texture_original.png", "texture_synthesis.png"],
    "sound_full": ["sound_waveforms.png"],
    "objects_full": ["lion_tiger_grid.png", "lion_tiger_grid_inferred_range.png"],
    "texture": ["texture_original.png", "texture_synthesis.png"],
    "sound": ["sound_waveforms.png"],
    "objects": [
        "lion_tiger_grid_inferred_range.png",
        "faces_samples.png",
        "faces_interpolation_linear.png",
        "faces_interpolation_slerp.png",
    ],
    "dynamic_texture": [
        "dynamic_frames.png",
        "dynamic_original.gif",
        "dynamic_abp_synthesis.gif",
        "dynamic_linear_synthesis.gif",
    ],
    "inpainting": ["inpainting_P5.png", "inpainting_P9.png", "inpainting_M30.png"],
    "compressed_sensing": ["cs_m600.png", "cs_m60.png"],
    "reconstruction": ["reconstruction.png"],
    "error_curves": ["error_curves.png"],
}
COMMANDS = {
    "paper_cpu": "python demos/{demo}.py --paper-cpu --out runs/{folder}",
    "full": "python demos/{demo}.py --out runs/{folder}",
    "quick": "python demos/{demo}.py --quick --out runs/{folder}",
}

HEAD = """# Results of the demos

Every number below was measured by running the demo with the command shown in its section;
nothing is copied from the paper. Regenerate this page with `python demos/_results_page.py`
after running the demos (it reads `runs/*/results.json`). Three kinds of run:

- **`--paper-cpu`**: the paper's quantitative protocols (held-out reconstruction, learning
  from occluded images, compressed sensing, train / held-out / negative errors) on real data
  at a size a 2-core CPU runs: 1,000 real handwritten digits for training and 300 held out
  (Debian's `opencv-doc`), mini-batches, 1,200 weight updates (`demos/_protocol.py`).
- **full mode**: the paper's networks and settings (SGD, 600 iterations), run on a CPU where
  a CPU affords it: texture, sound, lion-tiger.
- **quick mode**: small images and networks on a few dozen images of the paper's own data,
  one full batch, 100-200 weight updates, delta = 0.3: minutes each, they show every
  experiment end to end. They are not the test of the paper's quantitative claims (the
  `--paper-cpu` runs are), and their tables say where the claims fail at that size.

The CPU was a 2-core machine shared with other jobs during these runs, so the times are
upper bounds. Error measure everywhere: mean absolute per-pixel difference on the [0, 1]
scale. In every table the lowest error of each group of competing methods (the columns ending
in "train", "held-out" or "test") is **bold**.
"""


def _get(reports: dict, name: str) -> dict | None:
    return reports.get(name, {}).get("results")


def _batch_note(reports: dict[str, dict]) -> str:
    """Say so when the step size was measured with other mini-batches than the runs use."""
    study = reports.get("step_size_paper_cpu", {}).get("settings", {})
    runs = reports.get("reconstruction_paper_cpu", {}).get("settings", {})
    if (
        study.get("batch size")
        and runs.get("batch size")
        and study["batch size"] != runs["batch size"]
    ):
        return (
            f" (The study learned with mini-batches of {study['batch size']} for "
            f"{study.get('epochs of each run')} epochs; the runs below take mini-batches of "
            f"{runs['batch size']} for {runs['epochs']} epochs.)"
        )
    return ""


def summary(reports: dict[str, dict]) -> list[str]:
    """The paper's claims, one plain sentence each, read off the results (true when rerun)."""
    out = ["## The paper's claims, one by one", ""]
    r = _get(reports, "reconstruction_paper_cpu")
    if r:
        n, wins = len(r["rows"]), r["abp_wins_held_out"]
        d = ", ".join(str(row["d"]) for row in r["rows"])
        verdict = (
            "Reproduced" if wins == n else "Not reproduced" if wins == 0 else "Partly reproduced"
        )
        cross = r.get("crossover", [])
        ahead = [c for c in cross if c["ABP held-out"] < c["PCA held-out"]]
        sizes = ", ".join(str(c["training images"]) for c in cross)
        if cross and len(ahead) == len(cross):
            where = (
                f" On the crossover chart ABP is ahead at every training-set size tried ({sizes} "
                f"images, the same 1,200 weight updates each); the gap narrows as the set shrinks "
                f"(held-out error ABP {cross[0]['ABP held-out']:.3f} against PCA "
                f"{cross[0]['PCA held-out']:.3f} with {cross[0]['training images']} images, "
                f"{cross[-1]['ABP held-out']:.3f} against {cross[-1]['PCA held-out']:.3f} with "
                f"{cross[-1]['training images']}), and ABP over-fits more (its training error "
                f"{cross[0]['ABP train']:.3f} with {cross[0]['training images']} images)."
            )
        elif ahead:
            where = (
                f" On the crossover chart ABP is ahead from {ahead[0]['training images']} "
                f"training images on (sizes tried: {sizes})."
            )
        else:
            where = f" On the crossover chart ABP is ahead at none of the sizes tried ({sizes})."
        quick = _get(reports, "reconstruction")
        if quick:
            q = sum(row["ABP held-out"] < row["PCA held-out"] for row in quick["rows"])
            under = [row["d"] for row in quick["rows"] if row["ABP train"] > row["PCA train"]]
            if q < len(quick["rows"]):
                where += (
                    f" Quick mode (a few dozen faces, one full batch, 150 updates, delta = 0.3) "
                    f"is below PCA at {q} of {len(quick['rows'])} d"
                    + (
                        f"; at d = {', '.join(map(str, under))} its ABP fits even the training "
                        "images worse than PCA: what it lacks there is learning, not only data."
                        if under
                        else "."
                    )
                )
        out.append(
            f"- **Held-out reconstruction (experiment 7): {verdict}.** ABP's held-out error is "
            f"below PCA's at {wins} of {n} values of d ({d}) with 1,000 training digits." + where
        )
    r = _get(reports, "inpainting_paper_cpu")
    if r:
        k = r["kinds"]
        verdict = (
            "Reproduced"
            if r["abp_best_train"] == k and r["abp_best_test"] == k
            else "Not reproduced"
            if r["abp_best_train"] == 0 and r["abp_best_test"] == 0
            else "Partly reproduced"
        )
        losses = []
        for row in r["rows"]:
            for part in ("train", "held-out"):
                mine = row[f"ABP {part}"]
                others = {
                    c[: -len(part) - 1]: v
                    for c, v in row.items()
                    if c.endswith(f" {part}") and not c.startswith("ABP")
                }
                best = min(others, key=others.get)
                if others[best] < mine:
                    losses.append(
                        f"{row['occlusion']} {part} (occluded fraction "
                        f"{row['occluded fraction']:.2f}): {best} {others[best]:.4f} against ABP "
                        f"{mine:.4f}"
                    )
        out.append(
            f"- **Learning from occluded images (experiment 5): {verdict}.** Every training "
            f"image occluded; ABP has the lowest error on the occluded pixels for "
            f"{r['abp_best_train']} of {k} occlusion types on training images and "
            f"{r['abp_best_test']} of {k} on held-out images, against PPCA fitted by EM to the "
            "same occluded images, harmonic interpolation and total-variation inpainting."
            + (" Where it is not best: " + "; ".join(losses) + "." if losses else "")
        )
    r = _get(reports, "compressed_sensing_paper_cpu")
    if r:
        wins = r["abp_wins_held_out"]
        n = len(r["rows"]) // 2
        shared = [row for row in r["rows"] if row["S"] == "shared S"]
        verdict = (
            "Reproduced"
            if wins["one S per image"] == n and wins["shared S"] == n
            else "Partly reproduced"
            if wins["one S per image"] or wins["shared S"]
            else "Not reproduced"
        )
        detail = ", ".join(
            f"m = {row['m']}: ABP {row['ABP held-out']:.3f}, linear {row['linear held-out']:.3f}"
            for row in shared
        )
        out.append(
            f"- **Compressed sensing (experiment 6): {verdict}.** ABP's held-out recovery beats a "
            f"linear generator learned by the same ABP from the same projections in "
            f"{wins['one S per image']} of {n} settings of m with one S per image and in "
            f"{wins['shared S']} of {n} with one S shared by every image. With a shared S the "
            "directions of its null space are never observed in any image: a linear model "
            "cannot recover them, and only the generator's structure fills them in "
            f"(held-out error with a shared S, {detail}; the grey image "
            f"{shared[0]['grey image held-out']:.3f})."
        )
    r = _get(reports, "error_curves_paper_cpu")
    if r and r.get("train"):
        between = r["train"][-1] <= r["test"][-1] <= r["negative"][-1]
        out.append(
            f"- **Train / held-out / negative errors: at the end train {r['train'][-1]:.3f}, "
            f"held-out {r['test'][-1]:.3f}, negative {r['negative'][-1]:.3f}**: "
            + (
                "the held-out error stays between train and negative: the model generalises "
                "within its category and not beyond it."
                if between
                else "the held-out error is not between train and negative."
            )
        )
    r = _get(reports, "step_size_paper_cpu")
    if r:
        rows = {row["delta"]: row for row in r["rows"]}
        big, best = rows.get(max(rows)), rows[r["best"]]

        def norm(row: dict) -> float:
            return next(v for k, v in row.items() if k.startswith("mean"))

        out.append(
            f"- **Step size: delta = {r['best']}** had the lowest validation error "
            f"({best['validation error']:.3f}); at delta = {max(rows)} it was "
            f"{big['validation error']:.3f}, with mean norm of the training Z "
            f"{norm(big):.1f} against {norm(best):.1f} (about 4.5 under "
            "the prior). The `--paper-cpu` runs use it." + _batch_note(reports)
        )
    for name, what in (
        ("texture_full", "Texture"),
        ("sound_full", "Sound"),
        ("objects_full", "Lion-tiger (d = 2)"),
    ):
        report = reports.get(name)
        if report:
            out.append(
                f"- **{what}, full mode (the paper's settings) on a CPU:** ran in "
                f"{report['seconds'] / 60:.0f} minutes; pictures below."
            )
    quick = []
    report = reports.get("dynamic_texture", {})
    r = report.get("results")
    if r:
        sources = {"package": "real footage", "user": "the user's video"}
        data = sources.get(report["data"][0]["source"], "a generated moving texture")
        a, lin = r["abp"], r["linear"]
        quick.append(
            f"- Dynamic texture ({data}): reconstruction error {a['recon_error']:.3f} for ABP "
            f"against {lin['recon_error']:.3f} for the linear dynamic texture (PCA) at the same d; "
            f"the synthesised sequences change by {a['motion']:.3f} (ABP + VAR) and "
            f"{lin['motion']:.3f} (linear) per frame, the video by {r['original_motion']:.3f}."
        )
    r = reports.get("objects", {}).get("results", {}).get("faces")
    if r:
        quick.append(
            f"- Faces: the inferred Z have mean norm {r['mean_norm_inferred_z']:.1f}, against "
            f"about {r['d'] ** 0.5:.0f} for draws from the prior N(0, I_{r['d']})."
        )
    if quick:
        out += ["", "Quick mode, end to end:", ""] + quick
    return out + [""]


def shrink(src: Path, dst: Path) -> None:
    """Copy a picture, a PNG reduced to a 256-colour palette so that the committed copy is small."""
    from PIL import Image, ImageSequence

    if src.suffix.lower() == ".gif":  # the first 20 frames (2 s at 10 frames a second)
        with Image.open(src) as img:
            frames = [f.copy() for f in ImageSequence.Iterator(img)][:20]
            duration = img.info.get("duration", 100)
        frames[0].save(dst, save_all=True, append_images=frames[1:], duration=duration, loop=0)
        return
    if src.suffix.lower() != ".png":
        shutil.copyfile(src, dst)
        return

    with Image.open(src) as img:
        img.convert("RGB").quantize(256).save(dst, optimize=True)


def section(name: str, report: dict, runs: Path, dest: Path) -> list[str]:
    heading = C.markdown_report(report).split("\n", 1)[0]
    lines = [heading.replace("# ", f"## {name} ({report['mode']}): ", 1), ""]
    body = C.markdown_report({**report, "files": []}).split("\n", 1)[1]
    body = body.replace("\n## ", "\n### ")
    lines.append(body.strip())
    lines.append("")
    for f in PICTURES.get(name, []):
        src = runs / name / f
        if not src.is_file():
            continue
        (dest / name).mkdir(parents=True, exist_ok=True)
        shrink(src, dest / name / f)
        lines += [f"![{name}/{f}](results/{name}/{f})", ""]
    return lines


def main(argv: list[str]) -> None:
    runs = Path(argv[0]) if argv else Path("runs")
    here = Path(__file__).resolve().parent
    dest = here / "results"
    lines = [HEAD]
    reports = {}
    for name in ORDER:
        path = runs / name / "results.json"
        if path.is_file():
            reports[name] = json.loads(path.read_text(encoding="utf-8"))
    lines += summary(reports)
    for name, report in reports.items():
        lines += section(name, report, runs, dest)
    missing = [n for n in ORDER if n not in reports]
    if missing:
        lines += ["## Not run yet", ""]
        for n in missing:
            if n.endswith("_paper_cpu"):
                cmd = COMMANDS["paper_cpu"].format(demo=n[: -len("_paper_cpu")], folder=n)
            elif n.endswith("_full"):
                cmd = COMMANDS["full"].format(demo=n[: -len("_full")], folder=n)
            else:
                cmd = COMMANDS["quick"].format(demo=n, folder=n)
            lines.append(f"- {n}: `{cmd}`")
        lines.append("")
    (here / "RESULTS.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {here / 'RESULTS.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
