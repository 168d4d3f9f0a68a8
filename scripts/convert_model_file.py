"""Convert a model file of cnngenre 0.2 (a PyTorch file) to the safetensors model file of this version.

Usage (needs torch, which reads the old file: ``pip install ".[torch]"``)::

    python scripts/convert_model_file.py OLD.pt NEW.safetensors

The old file is read with ``torch.load(weights_only=True)`` (plain data only, no code runs), every
part of it goes through the checks of :meth:`GenreModel.load` by a round trip through the new
file, and the conversion is refused unless the model's id is the one stored in the old file: the
same weights, calibration and metadata, so predictions stored in a library under that id stay
valid. The shipped ``genre_cnn_core/data/default_model.safetensors`` was converted this way from
``default_model.pt``; ``scripts/train_default_model.py`` makes it anew.
"""

import argparse
import json
import sys

from genre_cnn_core import FeatureSettings, GenreModel

# Keys of the old file's metadata that GenreModel takes as arguments, not as metadata.
_STRUCTURE = ("backbone", "genres", "spellings", "settings", "architecture", "heldout_ids", "model_id")


def read_old(path: str) -> tuple[GenreModel, str]:
    """The model of a cnngenre 0.2 file, and the id that file stored."""
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format_version") != 2:
        raise ValueError(f"{path}: not a cnngenre 0.2 model file (format_version {payload.get('format_version')!r})")
    meta = json.loads(payload["metadata"])
    model = GenreModel(
        meta["backbone"], meta["genres"], meta["spellings"], FeatureSettings(**meta["settings"]),
        {name: tensor.numpy() for name, tensor in payload["weights"].items()}, meta["architecture"],
        payload["calibration"].numpy(), meta["heldout_ids"], payload["heldout_probabilities"].numpy(),
        {key: value for key, value in meta.items() if key not in _STRUCTURE}, payload["heldout_known"].numpy())
    return model, meta["model_id"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="model file written by cnngenre 0.2 (PyTorch)")
    parser.add_argument("new", help="safetensors model file to write")
    args = parser.parse_args(argv)
    model, stored_id = read_old(args.old)
    if model.model_id != stored_id:
        sys.exit(f"{args.old}: its content does not match its id {stored_id}; not converted")
    model.save(args.new)
    if GenreModel.load(args.new).model_id != stored_id:
        sys.exit(f"{args.new}: the converted model reads back with another id")
    print(f"converted {stored_id}: {args.old} -> {args.new}")


if __name__ == "__main__":
    main()
