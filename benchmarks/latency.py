"""Per-image inference latency of the Mask-RT-DETR variants and PP-YOLOE_seg-S at 640 px.

Reports the median of ``--runs`` timed forward passes (after one warm-up) of the full model
(eval mode, batch 1, top-k + mask resize included) and each model's ratio to Mask-RT-DETR-S measured
in the same run, and to ``MaskRCNN-ResNet50-FPN`` (Detectron2 family, see :func:`extra_models`) when
it can be built. PP-YOLOE_seg-S: forward, NMS (PaddleDetection's numbers) and the image-size masks of
its top 100 detections, like Mask-RT-DETR's top 100.

    PYTHONPATH=. python benchmarks/latency.py --variants S M L --runs 5 --device cpu
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch


def extra_models() -> list[tuple[str, Callable[[], torch.nn.Module], Callable]]:
    """Further models: a list of ``(name, build_fn, run_fn)`` where ``build_fn()`` returns an
    eval-mode module and ``run_fn(model, images)`` runs one inference on a [1, 3, size, size]
    float tensor in [0, 1].

    ``MaskRCNN-ResNet50-FPN`` (Detectron2 family, via ``workbench.models.create_model``, random
    init, 80 classes, test short side 640): the whole ``GeneralizedRCNN`` forward including
    Detectron2's post-processing (mask paste at the image size). With random weights no score
    would pass Detectron2's 0.05 test threshold and the mask head would never run, so the threshold
    is 0 here: like Mask-RT-DETR's top-100, 100 detections get masks. Skipped (with a message)
    when the Detectron2 family cannot be built."""
    try:
        from workbench.models import create_model

        d2 = create_model("MaskRCNN-ResNet50-FPN", device="cpu", num_classes=80, input_size=640,
                          d2_overrides={"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0})
    except Exception as e:  # noqa: BLE001 - Detectron2 missing or broken: time the others
        print(f"MaskRCNN-ResNet50-FPN skipped: {type(e).__name__}: {e}")
        return []
    bgr = d2.cfg.INPUT.FORMAT == "BGR"

    def build():
        return d2.net.eval()

    def run(model, images):
        x = images[0] * 255.0
        if bgr:
            x = x.flip(0)
        h, w = images.shape[-2:]
        return model([{"image": x, "height": h, "width": w}])

    return [("MaskRCNN-ResNet50-FPN", build, run)]


def _mask_rtdetr_entry(variant: str):
    from workbench.models.mask_rtdetr.model import build_mask_rtdetr
    from workbench.models.mask_rtdetr.postprocess import PostProcess

    post = PostProcess(num_top_queries=100)

    def build():
        return build_mask_rtdetr(variant, num_classes=80).eval()

    def run(model, images):
        out = model(images)
        return post(out, [(images.shape[-2], images.shape[-1])] * images.shape[0])

    return f"Mask-RT-DETR-{variant}", build, run


def _ppyoloe_entry():
    from workbench.models.ppyoloe_seg.model import build_ppyoloe_seg
    from workbench.models.ppyoloe_seg.postprocess import binary_masks, decode

    def build():
        return build_ppyoloe_seg("S", num_classes=80).eval()

    def run(model, images):
        size = (images.shape[-2], images.shape[-1])
        d = decode(model(images), [size])[0]
        top = {k: (v[:100] if k in ("scores", "labels", "boxes", "boxes_input", "mask_logits") else v)
               for k, v in d.items()}
        return binary_masks(top, size)

    return "PP-YOLOE_seg-S", build, run


def time_model(build, run, size: int, runs: int, device: torch.device) -> float:
    model = build().to(device)
    x = torch.rand(1, 3, size, size, device=device)
    times = []
    with torch.inference_mode():
        run(model, x)  # warm-up
        for _ in range(runs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            run(model, x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    del model
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=["S", "M", "L", "X", "H"], type=str.upper,
                    choices=["S", "M", "L", "X", "H"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave the default)")
    ap.add_argument("--no-ppyoloe", action="store_true", help="leave PP-YOLOE_seg-S out")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    entries = [_mask_rtdetr_entry(v) for v in args.variants]
    if "S" not in args.variants:  # the reference is always measured in the same run
        entries.insert(0, _mask_rtdetr_entry("S"))
    if not args.no_ppyoloe:
        entries.append(_ppyoloe_entry())
    entries += extra_models()
    results = {}
    for name, build, run in entries:
        results[name] = time_model(build, run, args.size, args.runs, device)
        print(f"{name:24s} {results[name] * 1000:9.1f} ms", flush=True)
    ref = results["Mask-RT-DETR-S"]
    base = results.get("MaskRCNN-ResNet50-FPN")
    print(f"\nmedian of {args.runs} runs, {args.size}x{args.size}, batch 1, device {device}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'model':24s} {'ms/image':>9s} {'x S':>6s}" + (f" {'x MaskRCNN-R50':>15s}" if base else ""))
    for name, t in results.items():
        print(f"{name:24s} {t * 1000:9.1f} {t / ref:6.2f}" + (f" {t / base:15.2f}" if base else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
