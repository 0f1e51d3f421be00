"""`fogreid gallery`: embed labelled vehicle images into a gallery."""

from __future__ import annotations

import argparse

from fogreid.cli.common import add_backend_options


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("gallery", help="embed labelled vehicle images into a gallery")
    p.add_argument("--model", required=True, help="a checkpoint (.pt), ONNX file or TensorRT engine")
    p.add_argument("--images", required=True, help="ROOT/<id>/*.jpg, or VeRi/FVRID-named files")
    p.add_argument("--out", required=True, help="gallery file (.npz)")
    add_backend_options(p)
    p.add_argument("--index", default="auto", choices=["auto", "flat", "ivf", "hnsw"],
                   help="search index (faiss): auto = exact up to 100k vectors, IVF above (default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fogreid.cli.common import input_file, input_folders, output_file
    from fogreid.fileio import refuse_outputs_over_inputs

    input_file(args.model, "--model", "model", "model")
    input_folders([args.images], "--images")
    refuse_outputs_over_inputs({"--out": args.out}, {"--model": args.model, "--images": args.images})
    output_file(args.out, "--out", (".npz",))
    from fogreid.runtime.backends import load_deployed
    from fogreid.runtime.gallery import IndexSpec, build_gallery, model_identity

    index = IndexSpec(kind=args.index)
    with load_deployed(args.model, args.backend, args.device, batch=32) as model:  # build_gallery's
        gallery = build_gallery(model, args.images, progress=not args.quiet, identity=model_identity(args.model),
                                index=index)
    gallery.save(args.out)
    print(f"wrote {args.out}: {len(gallery.labels)} images of {len(set(gallery.labels))} identities, "
          f"{gallery.embeddings.shape[1]}-d, {gallery.index_kind} index, embedded by {model.name}")
    return 0
