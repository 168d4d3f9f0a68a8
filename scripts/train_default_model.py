"""Train the default model shipped in the package.

The pretrained musicnn backbone plus a genre head trained on every GTZAN
clip of ``shared/data/gtzan-dev`` (10 genres: blues, classical, country,
disco, hip-hop, jazz, metal, pop, reggae, rock), artists grouped as in its
``labels.csv``::

    python scripts/train_default_model.py ../shared/data/gtzan-dev

It goes through the same code as ``beet cnngenre -t`` and writes
``genre_cnn_core/data/default_model.safetensors`` (about 90 KB: only the head, which may read the whole embedding).
"""

import argparse
import csv
import os
import sys

from genre_cnn_core import DEFAULT_MODEL, FeatureCache, RunConfig, format_report, train_on_files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="gtzan-dev folder holding labels.csv")
    parser.add_argument("--output", default=DEFAULT_MODEL)
    parser.add_argument("--cache", default=os.path.join("bench", "out", "cache"))
    parser.add_argument("--jobs", type=int, default=0)
    args = parser.parse_args(argv)

    root = os.path.dirname(os.path.abspath(args.folder.rstrip("/")))
    with open(os.path.join(args.folder, "labels.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    paths = [os.path.join(root, row["path"]) for row in rows]
    model, choice, failures = train_on_files(
        paths, [row["genre"] for row in rows], artists=[row["artist_group"] for row in rows],
        backbone="musicnn", min_tracks=5,
        run=RunConfig(cache=FeatureCache(args.cache), n_jobs=args.jobs, device="cpu", progress=True), log=print)
    if failures:
        sys.exit(f"{len(failures)} files failed: {failures[0].reason}")
    model.metadata["name"] = "default-gtzan10"
    model.metadata["training_data"] = (f"GTZAN (Tzanetakis 2002), the {len(rows)} clips of shared/data/gtzan-dev, "
                                       "artist groups from Sturm's analysis")
    print(format_report(model.metadata["validation"], model.genres, model.metadata["tracks_per_genre"],
                        scope="held-out clips (each predicted by a head that never heard its artist group)",
                        artists_per_genre=model.metadata["artists_per_genre"]))
    if model.metadata["usability"]:
        sys.exit(f"not saved: {model.metadata['usability']}")
    model.save(args.output)
    print(f"saved {model.model_id} to {args.output} ({os.path.getsize(args.output)} bytes)")


if __name__ == "__main__":
    main()
