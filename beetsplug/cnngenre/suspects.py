"""``beet cnngenre --suspects``: the items or albums whose tagged genres their audio contradicts."""

from __future__ import annotations

from beets import ui
from beets.library import Item

from .fields import field, own, training_genres
from .report import label
from .settings import Settings, genre_taxonomy
from .storage import all_or_nothing


def suspects(plugin, lib, opts, args, settings: Settings):
    """List the items (or albums) whose tagged genres the audio contradicts; set ``cnn_suspect``."""
    import numpy as np

    from genre_cnn_core import Failure, judge_album, judge_files

    model = plugin.model(settings)
    taxonomy = genre_taxonomy(settings)
    albums = list(lib.albums(args)) if opts.album else []
    tracks_of = [list(album.items()) for album in albums]  # queried once: each query makes new objects
    items = [item for tracks in tracks_of for item in tracks] if opts.album else list(lib.items(args))
    if not items:
        ui.print_("cnngenre: nothing matched")
        return
    judged: dict = {}
    failed = 0
    tagged = [training_genres(item, settings.train_on_applied) for item in items]
    for result in judge_files(model, [str(item.filepath) for item in items], tagged, taxonomy=taxonomy,
                              run=plugin.run_config(settings)):
        if isinstance(result, Failure):
            failed += 1
            plugin._log.warning("{}: {}", items[result.index].filepath, result.reason)
        else:
            judged[result.index] = result
    objects, judgements = items, [judged.get(i) for i in range(len(items))]
    if opts.album:
        objects, judgements, first = albums, [], 0
        for album, tracks in zip(albums, tracks_of):
            track_judgements = [judged.get(i) for i in range(first, first + len(tracks))]
            first += len(tracks)
            rows = [j.probabilities for j in track_judgements if j is not None and j.probabilities is not None]
            judgements.append(judge_album(model, rows, training_genres(album, settings.train_on_applied), taxonomy))
    ranked = sorted((j.score, n) for n, j in enumerate(judgements) if j is not None and j.score is not None)
    flagged = [(score, n) for score, n in ranked if score >= settings.suspect_threshold]
    for score, n in reversed(flagged):
        j = judgements[n]
        order = np.argsort(-j.probabilities)[:3]
        audio = ", ".join(f"{model.genres[c]} {j.probabilities[c]:.2f}" for c in order)
        ui.print_(f"{score:.2f}  {label(objects[n])}: tagged {', '.join(j.tagged)}; audio says {audio}"
                  f" ({j.source})")
    if not opts.pretend:
        with all_or_nothing(lib):
            for obj, j in zip(objects, judgements):
                name = field(obj, "suspect")
                if j is not None and j.score is not None:
                    obj[name] = round(j.score, 4)
                elif own(obj, name) is not None:
                    del obj[name]
                if isinstance(obj, Item):
                    obj.store()
                else:
                    obj.store(inherit=False)  # the album's judgement is not its tracks'

    reasons = {}
    for j in judgements:
        if j is not None and j.score is None:
            reasons[j.source] = reasons.get(j.source, 0) + 1
    kind = "album" if opts.album else "item"
    not_judged = ", ".join(f"{n} ({why})" for why, n in sorted(reasons.items())) or "none"
    ui.print_(f"cnngenre: flagged {len(flagged)} of {len(ranked)} judged {kind}s at {field(kind, 'suspect')} >= "
              f"{settings.suspect_threshold:g} (suspect_threshold); not judged: {not_judged}; failed {failed}")
