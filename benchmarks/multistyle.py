"""One multi-style model against single-style models trained with the same settings
on the photos held out from training.

    python benchmarks/multistyle.py \
        --singles runs/single_candy runs/single_mosaic runs/single_starry-night runs/single_udnie \
        --multi runs/four --base runs/three --extended runs/three_plus [more ...] \
        [--photos ../shared/data/photos] [--json multistyle.json]

Arguments are training workdirs (their `model.npz` and `metrics.jsonl` are read) or model
files. `--singles` may cover only some of the multi-style model's styles: the others are scored
with the multi-style model's own objective for that style and left out of sections 1 and 4.
Every model is scored on the held-out photos of `--photos` (the training split's:
`validation_fraction` of the multi-style run's config), resized and centre-cropped to the
training size as validation does, and prints:

1. **Per style, multi vs single.** Style and content loss of the multi-style model in each style
   against the single-style model of that style, both scored with the single-style model's
   objective (its style image, layers and balanced weights; `fnst_jax.evaluation.Evaluator`, the
   output clipped to the pixel range), means over the photos; and the last validation of each
   run as logged in `metrics.jsonl` (4 of those photos).
2. **Whose style is it?** The Gram distance (`fnst_jax.quality`: relu1_1, relu2_1, relu3_1,
   Grams normalised by C*H*W) of the output in each style to each style image, for the
   multi-style model and the single-style models; and the same as a reduction (the photos'
   distance to that style image over the output's), which does not favour style images whose
   Grams are small. Twice: with each style image as training resized it (shorter side =
   the model's `style_size`: the targets the model was trained toward), and resized to the
   photos' size (`quality.StyleTargets`, as `evaluate`'s style reduction). A style image's
   Grams depend on its scale (printed first: each image's squared Gram norm at both): candy.jpg
   at 128 px (longest side) has 2.1x the norm it has at a 256 px shorter side, mosaic.jpg 0.4x.
3. **Mixes.** For each pair of styles, the multi-style model's 50/50 mix: its Gram distance to
   each pure output, against the distance between the two pure outputs (per photo, then the
   mean); a mix lies between the pure styles when both are below.
4. **Adding a style** (`--base` and `--extended`: a model and the run that added a style to it
   with `train.only_norm_params`): the largest difference of the base styles' outputs between
   the two models (0 = bit-identical), and the new style's validation style loss over the run's
   steps against the single-style model's last one (the first step within 1.5x).
5. **Size**: parameters and file bytes of each model.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import recipe  # benchmarks/recipe.py, beside this script

from fnst_jax import (
    evaluate,
    evaluation,
    export,
    image_io,
    model_file,
    quality,
    train_monitor,
    vgg_weights,
)
from fnst_jax.transformer_net import TransformerNet, count_params, single_style_model

ADDED_STYLE_BOUND = 1.5  # the issue's: the added style's loss within 1.5x of its single model's


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--singles", nargs="*", default=[], help="one-style workdirs/models (any of the styles)"
    )
    parser.add_argument("--multi", required=True, help="the multi-style workdir or model")
    parser.add_argument("--base", help="a multi-style model that a style was added to")
    parser.add_argument(
        "--extended", nargs="*", default=[], help="the workdir(s) of the run(s) that added one"
    )
    parser.add_argument("--photos", default="../shared/data/photos")
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=None,
        help="default: the multi-style run's data.validation_fraction",
    )
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--grid",
        help="write a JPEG: per held-out photo (up to 3), the photo, then each style's "
        "single-style and multi-style output, then the 50/50 mixes of styles 1+2 and 3+4",
    )
    return parser.parse_args()


@dataclasses.dataclass
class Run:
    """A model given on the command line: its file, the loaded model and metadata, and its
    workdir's logged validation records ([] for a model file)."""

    path: str
    file: Path
    model: TransformerNet
    meta: dict[str, Any]
    validation: list[dict[str, Any]]

    @classmethod
    def load(cls, path: str) -> Run:
        file = model_file.resolve_model_path(path)
        model, meta = export.load_model(file)
        return cls(path, file, model, meta, logged_validation(path))


def logged_validation(path: str) -> list[dict[str, Any]]:
    """The validation records of a workdir's metrics.jsonl ([] for a model file)."""
    return train_monitor.read_metrics(path, "validation") if Path(path).is_dir() else []


def held_out_photos(folder: str, fraction: float, image_size: int) -> tuple[list[str], np.ndarray]:
    """The held-out photos' names and the photos centre-cropped to `image_size` as validation
    crops them (float32)."""
    files = recipe.held_out_files(folder, fraction)
    images = [
        evaluation.prepare_image(image_io.read_image(path).rgb, image_size) for _, path in files
    ]
    return [name for name, _ in files], np.stack(images).astype(np.float32)


class Scorer:
    """One style's objective (from a single-style model's metadata, or `style_view` of the
    multi-style model's) on the held-out photos."""

    def __init__(self, meta: dict[str, Any], vgg: Any, photos: np.ndarray) -> None:
        self.spec = evaluation.spec_from_metadata(meta)
        self.grams = evaluation.load_style_grams(
            vgg, meta["style_image"], meta.get("style_size"), self.spec.style_layers
        )
        self.vgg, self.pad, self.photos = vgg, int(meta["pad"]), jnp.asarray(photos)

    def run(self, model: TransformerNet) -> tuple[np.ndarray, dict[str, float]]:
        """(the outputs, clipped, float32; mean weighted style/content/tv/total loss)."""
        evaluator = evaluation.Evaluator(model, self.vgg, self.spec, self.grams, self.pad)
        outputs, results = evaluator.evaluate(self.photos)
        keys = evaluation.TERM_KEYS.values()
        return np.asarray(outputs), {k: float(np.mean([r[k] for r in results])) for k in keys}


def style_view(meta: dict[str, Any], index: int) -> dict[str, Any]:
    """A multi-style model's metadata as if it were a one-style model of style `index`: that
    style's image and balanced weight (for a style with no single-style model given)."""
    loss = dict(meta["loss"])
    loss["style_weight"] = float(loss["style_weights"][index])
    loss["style_weights"] = None
    return {**meta, "style_image": meta["styles"][index]["image"], "loss": loss}


def distance(vgg_grams_a: dict[str, Any], vgg_grams_b: dict[str, Any]) -> float:
    """Mean over photos of the Gram distance at the quality style layers."""
    return float(np.mean(quality.gram_distance(vgg_grams_a, vgg_grams_b, quality.STYLE_LAYERS)))


def compare_styles(args: argparse.Namespace, report: dict[str, Any]) -> None:
    multi_run = Run.load(args.multi)
    multi = multi_run.model
    names = model_file.style_names(multi_run.meta, multi.num_styles)
    singles: dict[str, Run] = {}
    for path in args.singles:
        run = Run.load(path)
        singles[model_file.style_names(run.meta)[0]] = run
    unknown = sorted(set(singles) - set(names))
    if unknown:
        raise SystemExit(f"--singles: {', '.join(unknown)}: not a style of {args.multi}")
    meta = multi_run.meta
    vgg = vgg_weights.load_vgg(meta["vgg"]["weights"], meta["vgg"]["preprocessing"])
    fraction = args.validation_fraction
    if fraction is None:
        fraction = float(meta["config"]["data"]["validation_fraction"])
    photo_names, photos = held_out_photos(args.photos, fraction, int(meta["image_size"]))
    report["photos"] = photo_names
    print(f"held-out photos ({len(photo_names)}, {photos.shape[1]} px): {', '.join(photo_names)}")

    print(
        "\n1. per style: multi-style model / single-style model (held-out photos; last validation)"
    )
    print(
        "| style | style loss single | multi | ratio | content single | multi | ratio "
        "| logged val. style ratio | content ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    scorers = {
        name: Scorer(singles[name].meta if name in singles else style_view(meta, i), vgg, photos)
        for i, name in enumerate(names)
    }
    pure_outputs, single_outputs, per_style = {}, {}, {}
    for index, name in enumerate(names):
        scorer = scorers[name]
        pure_outputs[name], multi_terms = scorer.run(single_style_model(multi, index))
        if name not in singles:
            print(f"| {name} | (no single-style model given) |")
            continue
        single_outputs[name], single_terms = scorer.run(singles[name].model)
        single_last = singles[name].validation[-1] if singles[name].validation else {}
        multi_last = multi_run.validation[-1] if multi_run.validation else {}
        logged = {
            term: multi_last[f"{name}/raw_{term}"] / single_last[f"raw_{term}"]
            for term in ("style", "content")
            if f"{name}/raw_{term}" in multi_last and f"raw_{term}" in single_last
        }
        per_style[name] = {
            "single": single_terms,
            "multi": multi_terms,
            "style_ratio": multi_terms["style_loss"] / single_terms["style_loss"],
            "content_ratio": multi_terms["content_loss"] / single_terms["content_loss"],
            "logged_validation_ratio": logged,
            "logged_steps": [single_last.get("step"), multi_last.get("step")],
        }
        row = per_style[name]
        print(
            f"| {name} | {single_terms['style_loss']:,.0f} | {multi_terms['style_loss']:,.0f} "
            f"| {row['style_ratio']:.2f}x | {single_terms['content_loss']:,.0f} "
            f"| {multi_terms['content_loss']:,.0f} | {row['content_ratio']:.2f}x "
            f"| {logged.get('style', np.nan):.2f}x | {logged.get('content', np.nan):.2f}x |"
        )
    report["per_style"] = per_style

    images = [style["image"] for style in meta["styles"]]
    size = max(photos.shape[1:3])
    style_size = meta.get("style_size")  # None: trained on the style images as they are
    targets = {  # scale: (its title, each style image's Grams at it)
        "as_trained": (
            "style images as trained "
            + (f"(shorter side {style_size} px)" if style_size else "(their own size)"),
            [
                evaluation.load_style_grams(vgg, image, style_size, quality.STYLE_LAYERS)
                for image in images
            ],
        ),
        "photo_size": (
            f"style images at the photos' size ({size} px)",
            [quality.StyleTargets(vgg, image_io.read_image(i).rgb).at(size) for i in images],
        ),
    }
    norms = {  # the squared Frobenius norm summed over the layers, one per scale
        name: [
            float(sum(jnp.sum(jnp.square(grams[i][layer])) for layer in quality.STYLE_LAYERS))
            for _, grams in targets.values()
        ]
        for i, name in enumerate(names)
    }
    print("\n2. squared Gram norm of each style image: as trained / at the photos' size")
    for name, (trained, photo_size) in norms.items():
        print(f"   {name}: {trained:.3g} / {photo_size:.3g} ({photo_size / trained:.2f}x)")
    report["style_gram_norms"] = norms
    outputs_grams = {
        "multi": {name: quality.image_grams(vgg, out) for name, out in pure_outputs.items()},
        "single": {name: quality.image_grams(vgg, out) for name, out in single_outputs.items()},
    }
    grams = outputs_grams["multi"]
    photo_grams = quality.image_grams(vgg, photos)
    to_styles: dict[str, Any] = {}
    for scale, (title, style_grams) in targets.items():
        to_styles[scale] = {
            model: style_table(
                f"{model}-style outputs, {title}",
                names,
                by_model,
                dict(zip(names, style_grams, strict=True)),
                photo_grams,
            )
            for model, by_model in outputs_grams.items()
            if by_model
        }
    report["gram_distance_to_styles"] = to_styles

    print("\n3. 50/50 mixes: Gram distance to each pure output vs between the pure outputs")
    print("| mix | to first | to second | between pure | larger / between | between? |")
    print("|---|---:|---:|---:|---:|---|")
    mixes, mixed_outputs = {}, {}
    for (i, a), (j, b) in itertools.combinations(enumerate(names), 2):
        weights = [0.0] * len(names)
        weights[i] = weights[j] = 0.5
        mixed, _ = scorers[a].run(single_style_model(multi, weights))
        mixed_outputs[(i, j)] = mixed
        mix_grams = quality.image_grams(vgg, mixed)
        figures = {
            "to_first": distance(mix_grams, grams[a]),
            "to_second": distance(mix_grams, grams[b]),
            "between_pure": distance(grams[a], grams[b]),
        }
        larger = max(figures["to_first"], figures["to_second"]) / figures["between_pure"]
        figures["larger_over_between"] = larger
        figures["between"] = larger < 1
        mixes[f"{a}+{b}"] = figures
        print(
            f"| {a} + {b} | {figures['to_first']:.3g} | {figures['to_second']:.3g} "
            f"| {figures['between_pure']:.3g} | {larger:.2f} "
            f"| {'yes' if figures['between'] else 'NO'} |"
        )
    report["mixes"] = mixes
    if args.grid:
        columns = [photos]
        for name in names:
            columns += [single_outputs[name]] if name in single_outputs else []
            columns.append(pure_outputs[name])
        columns += [mixed_outputs[pair] for pair in ((0, 1), (2, 3)) if pair in mixed_outputs]
        count = min(3, len(photos))
        rows = [[image_io.to_uint8(column[i]) for column in columns] for i in range(count)]
        grid = np.asarray(evaluate.make_grid(rows, height=photos.shape[1]))
        image_io.write_image(args.grid, grid)
        print(
            f"wrote {args.grid}: columns photo, "
            + ", ".join(
                f"{name} single, {name} multi" if name in single_outputs else f"{name} multi"
                for name in names
            )
            + ", 50/50 mixes of styles 1+2 and 3+4"
        )
    runs = [*singles.values(), multi_run]
    if args.base:
        base = Run.load(args.base)
        extended = [Run.load(path) for path in args.extended]
        report["added_style"] = {
            run.path: compare_added_style(base, run, singles, scorers, per_style)
            for run in extended
        }
        runs += [base, *extended]
    report["size"] = sizes(runs)


def style_table(
    title: str,
    names: list[str],
    outputs_grams: dict[str, Any],
    style_grams: dict[str, Any],
    photo_grams: dict[str, Any],
) -> dict[str, Any]:
    """Section 2 for one model kind and style scale: the Gram distance of each style's output
    (rows: those in `outputs_grams`) to each style image, and the same as a reduction (the
    photos' distance to that style image over the output's: how far the output moved toward
    it, whatever the image's Gram magnitude)."""
    distances, reductions = {}, {}
    for name in outputs_grams:
        distances[name] = {t: distance(outputs_grams[name], style_grams[t]) for t in names}
        reductions[name] = {
            t: distance(photo_grams, style_grams[t]) / distances[name][t] for t in names
        }
    for kind, table, best in (
        ("Gram distance", distances, min),
        ("reduction toward each style (photo's distance / output's)", reductions, max),
    ):
        print(f"\n2. {title} (rows: outputs, columns: style images): {kind}")
        print("| output \\ style | " + " | ".join(names) + " | own style best? |")
        print("|---|" + "---:|" * len(names) + "---|")
        for name in table:
            chosen = best(table[name], key=table[name].get)
            cells = " | ".join(f"{table[name][other]:.3g}" for other in names)
            verdict = "yes" if chosen == name else f"NO ({chosen})"
            print(f"| {name} | {cells} | {verdict} |")
    return {"distance": distances, "reduction": reductions}


def compare_added_style(
    base: Run,
    extended: Run,
    singles: dict[str, Run],
    scorers: dict[str, Scorer],
    per_style: dict[str, Any],
) -> dict[str, Any]:
    base_names = model_file.style_names(base.meta, base.model.num_styles)
    names = model_file.style_names(extended.meta, extended.model.num_styles)
    print(
        f"\n4. adding a style: {base.path} ({', '.join(base_names)}) -> {extended.path} "
        f"({', '.join(names)})"
    )
    unchanged = {}
    for index, name in enumerate(base_names):
        before, _ = scorers[name].run(single_style_model(base.model, index))
        after, _ = scorers[name].run(single_style_model(extended.model, index))
        unchanged[name] = float(np.max(np.abs(before - after)))
        print(f"   {name}: largest output difference {unchanged[name]:.3g} (0 = bit-identical)")
    result: dict[str, Any] = {"base_styles_max_difference": unchanged, "new_styles": {}}
    for name in names[len(base_names) :]:
        if name not in singles or not singles[name].validation:
            print(f"   {name}: no single-style workdir given to compare the new style with")
            continue
        single_last = singles[name].validation[-1]
        single_final = single_last["raw_style"]
        curve = [
            (r["step"], r[f"{name}/raw_style"] if f"{name}/raw_style" in r else r["raw_style"])
            for r in extended.validation
        ]
        within = [step for step, value in curve if value <= ADDED_STYLE_BOUND * single_final]
        print(
            f"   {name}: validation raw style loss of the single-style model at its step "
            f"{single_last['step']}: {single_final:,.0f}"
        )
        print("   | step | raw style | / single |")
        print("   |---:|---:|---:|")
        for step, value in curve:
            print(f"   | {step} | {value:,.0f} | {value / single_final:.2f}x |")
        first = within[0] if within else None
        print(f"   first step within {ADDED_STYLE_BOUND}x: {first}")
        if name in per_style:  # section 1 scored it: the same objective and photos
            single_terms = per_style[name]["single"]
        else:
            single_terms = scorers[name].run(singles[name].model)[1]
        _, added_terms = scorers[name].run(single_style_model(extended.model, names.index(name)))
        ratio = added_terms["style_loss"] / single_terms["style_loss"]
        content = added_terms["content_loss"] / single_terms["content_loss"]
        print(
            f"   held-out photos: style loss {ratio:.2f}x, content loss {content:.2f}x the "
            "single-style model's"
        )
        result["new_styles"][name] = {
            "single_validation_raw_style": single_final,
            "curve": curve,
            "first_step_within_bound": first,
            "held_out_style_ratio": ratio,
            "held_out_content_ratio": content,
        }
    return result


def sizes(runs: list[Run]) -> dict[str, Any]:
    print("\n5. size")
    print("| model | styles | parameters | file bytes |")
    print("|---|---:|---:|---:|")
    result = {}
    for run in runs:
        row = result[str(run.file)] = {
            "styles": run.model.num_styles,
            "parameters": count_params(run.model),
            "bytes": os.path.getsize(run.file),
        }
        print(f"| {run.file} | {row['styles']} | {row['parameters']:,} | {row['bytes']:,} |")
    return result


def main() -> None:
    args = parse_args()
    report: dict[str, Any] = {}
    compare_styles(args, report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
