"""`imuse export onnx`: the deployed recommender for the book's "Try it" page.

    imuse export onnx [--out DIR] [--model PATH] [--index PATH] [--check-images N] [--no-check] [--force]
                      [--profile NAME]

Writes ``model.<fingerprint>.onnx`` (the image path: normalisation, backbone, image arm, VA
head), ``songs.json`` (the index's songs and their VA, rated or predicted), the example pictures
(``examples/``) and ``manifest.json`` into DIR, after checking the ONNX file against PyTorch on
real OASIS images. With ``--profile``, songs.json carries the model's measured NSG@10 on the
cold split from that profile's table2.csv (the page's note on its quality).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ImuseError


def register(sub) -> None:
    p = sub.add_parser("export", help="export the recommender for a static web page (ONNX + song file)",
                       description="Export the deployed recommender for the book's in-browser page.")
    esub = p.add_subparsers(dest="export_command", metavar="WHAT")
    esub.required = True
    q = esub.add_parser("onnx", help="the image path as ONNX and the songs as JSON, checked against PyTorch",
                        description="Export the model's image path to ONNX (checked with the ONNX checker and "
                                    "against PyTorch on real OASIS images) and the index's songs to JSON.")
    q.add_argument("--out", type=Path, metavar="DIR",
                   help="output folder (default: RESULTS/tryit, where RESULTS is $IMUSE_RESULTS or results/)")
    q.add_argument("--model", metavar="PATH", help="trained model (default: the one `imuse train` wrote)")
    q.add_argument("--index", metavar="PATH", help="song index file (default: the model's index in the cache)")
    q.add_argument("--check-images", type=int, default=None, metavar="N",
                   help="OASIS images to check the export on, spread over the quadrants (default 8)")
    q.add_argument("--no-check", action="store_true", help="skip the check against PyTorch (not for publishing)")
    q.add_argument("--force", action="store_true", help="export again even if an identical export is there")
    q.add_argument("--profile", metavar="NAME", default=None,
                   help="profile whose results/NAME/table2.csv gives the page's note on the model's measured "
                        "quality (default: no note)")
    q.set_defaults(func=cmd_export_onnx)


def cmd_export_onnx(args) -> int:
    from .. import config, export, io

    n = export.CHECK_IMAGES if args.check_images is None else args.check_images
    if n < 1:
        raise ImuseError(f"--check-images must be at least 1, not {n}")
    out = args.out or config.results_dir() / "tryit"
    io.check_output_folder(str(out), inputs=[args.model, args.index], writes=("manifest.json", "songs.json"))
    images = None if args.no_check else export.check_images(n)
    manifest = export.write_page_assets(out, args.model, args.index, images=images, check=not args.no_check,
                                        force=args.force, profile=args.profile)
    files = manifest["files"]
    print(f"exported {manifest['model_label']} to {out}")
    for name, info in files.items():
        print(f"  {name}: {info['bytes'] / 1e6:.2f} MB")
    check = manifest.get("check")
    if check:
        print(f"  check on {len(check['images'])} OASIS images: max |VA difference| ONNX vs PyTorch "
              f"{check['max_abs_diff_onnx_vs_torch']:.1e}, PyTorch module vs `imuse recommend` "
              f"{check['max_abs_diff_torch_vs_recommend']:.1e} (tolerance {check['tolerance']:g})")
    else:
        print("  not checked against PyTorch (--no-check)")
    return 0
