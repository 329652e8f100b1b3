"""Collect the demos' reports from runs/<demo>/ into demos/RESULTS.md and demos/results/.

Run after the demos, from the repository root::

    python demos/_results_page.py            # reads runs/*/results.json

Pictures named in PICTURES are copied to demos/results/<demo>/ (kept small: they are committed);
the page links them relatively. Numbers are copied from results.json as measured, never edited.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import _common as C

ORDER = [
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
FULL = {
    "texture": "python demos/texture.py --device gpu",
    "sound": "python demos/sound.py --device gpu",
    "objects": "python demos/objects.py --device gpu",
    "dynamic_texture": "python demos/dynamic_texture.py --device gpu",
    "inpainting": "python demos/inpainting.py --device gpu",
    "compressed_sensing": "python demos/compressed_sensing.py --device gpu",
    "reconstruction": "python demos/reconstruction.py --device gpu",
    "error_curves": "python demos/error_curves.py --device gpu",
}

HEAD = """# Results of the demos

Every number below was measured by running the demo with the command shown; nothing is copied
from the paper. The runs here are **quick mode on a CPU** (small images and networks, few
iterations, Adam): they show the experiments working end to end, not the paper's numbers. The
CPU was a shared 2-core machine on which other jobs sometimes ran, so the times are rough.
Full-mode runs (the paper's settings, meant for a GPU) have **not been run yet**; their commands
are listed at the end. Regenerate this page with `python demos/_results_page.py` after running
the demos.

Error measure everywhere: mean absolute per-pixel difference on the [0, 1] scale.
"""


def summary(reports: dict[str, dict]) -> list[str]:
    """What the quick runs show, read off their results (so it stays true when they are rerun)."""
    out = ["## In short", ""]
    r = reports.get("inpainting", {}).get("results")
    if r:
        out.append(
            f"- Occluded images: ABP has the lowest recovery error on {r['abp_best_train']} of "
            f"{r['kinds']} occlusion types for training images and {r['abp_best_test']} of "
            f"{r['kinds']} for held-out ones; interpolation from neighbouring pixels is the "
            "strongest method at these small sizes. The paper's claim is not reproduced in quick "
            "mode."
        )
    r = reports.get("compressed_sensing", {}).get("results")
    if r:
        n = len(r["rows"])
        out.append(
            f"- Compressed sensing: ABP is below PCA in {r['abp_wins_train']} of {n} settings on "
            f"training images and {r['abp_wins_test']} of {n} on held-out ones (the PCA basis was "
            "fitted on the complete images, which ABP never sees)."
        )
    r = reports.get("reconstruction", {}).get("results")
    if r:
        n = len(r["rows"])
        train = sum(row["ABP train"] < row["PCA train"] for row in r["rows"])
        out.append(
            f"- Held-out reconstruction: ABP is below PCA at {r['abp_wins_held_out']} of {n} "
            f"values of d on held-out images (and at {train} of {n} on training images). The "
            "paper's claim is not reproduced in quick mode."
        )
    r = reports.get("error_curves", {}).get("results")
    if r and r.get("train"):
        out.append(
            f"- Error curves: at the end train {r['train'][-1]:.3f}, test {r['test'][-1]:.3f}, "
            f"negative {r['negative'][-1]:.3f}: test stays between train and negative."
        )
    report = reports.get("dynamic_texture", {})
    r = report.get("results")
    if r:
        sources = {"package": "real footage", "user": "the user's video"}
        data = sources.get(report["data"][0]["source"], "a generated moving texture")
        a, lin = r["abp"], r["linear"]
        out.append(
            f"- Dynamic texture ({data}): reconstruction error {a['recon_error']:.3f} for ABP "
            f"against {lin['recon_error']:.3f} for the linear dynamic texture (PCA) at the same d; "
            f"the synthesised sequences change by {a['motion']:.3f} (ABP + VAR) and "
            f"{lin['motion']:.3f} (linear) per frame, the video by {r['original_motion']:.3f}."
        )
    r = reports.get("objects", {}).get("results", {}).get("faces")
    if r:
        out.append(
            f"- Faces: the inferred Z have mean norm {r['mean_norm_inferred_z']:.1f}, against "
            f"about {r['d'] ** 0.5:.0f} for draws from the prior N(0, I_{r['d']}): the prior's "
            "samples come from a region the training images' Z do not occupy, which likely "
            "explains why they look more blurred than the interpolations between inferred Z."
        )
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
    lines = [C.markdown_report(report).split("\n", 1)[0].replace("# ", f"## {name}: ", 1), ""]
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
    missing = []
    for name in ORDER:
        path = runs / name / "results.json"
        if not path.is_file():
            missing.append(name)
            continue
        report = json.loads(path.read_text(encoding="utf-8"))
        lines += section(name, report, runs, dest)
    if missing:
        lines += ["## Not run yet in quick mode", ""]
        lines += [f"- {n}: `python demos/{n}.py --quick`" for n in missing] + [""]
    lines += [
        "## Full mode (the paper's settings): not run yet",
        "",
        "The full runs (the paper's sizes and iteration counts) are meant for a GPU and have not been "
        "run. Each full-mode setting was only checked to build its networks and data and to complete "
        "one learning iteration on the CPU (`python demos/NAME.py --iterations 1`; for inpainting, "
        "5 of its 7 occlusion types within a 5-minute limit); no numbers from those checks are "
        "reported.",
        "",
        "| demo | command |",
        "|---|---|",
    ]
    lines += [f"| {n} | `{FULL[n]}` |" for n in ORDER] + [""]
    (here / "RESULTS.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {here / 'RESULTS.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
