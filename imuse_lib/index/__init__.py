"""The song index: the deployed recommender's data, one SQLite file per model.

One SQLite file (no server). Per song it holds the metadata, the stored music vector
(``net.music_vector``, float32 [128]), the song's predicted valence/arousal and, where the song
has one, its rated VA with ``va_source`` saying where it comes from (:data:`.files.VA_SOURCES`:
the 4Q catalog's AllMusic mood tags, values or tags given with ``imuse index add``; else
``predicted``): the recommender ranks with the rated VA where there is one. Per OASIS
image the image vector and predicted VA (for the reverse direction); and, in ``meta``,
the fingerprint of the model it came from. A model whose fingerprint differs is refused
(:class:`~imuse_lib.errors.ModelMismatchError`).

The parts, from storage up (storage imports no model; only :mod:`.building` runs one):

* :mod:`.files`: schema, connections, ``meta``, the writer lock, generations;
* :mod:`.arrays`: the memory-mapped arrays of a large index;
* :mod:`.reading`: :func:`~.reading.open_index` -> :class:`~.reading.SongIndex`,
  :func:`~.reading.check_fingerprint`, :func:`~.reading.default_index_path`;
* :mod:`.integrity`: :func:`~.integrity.check_integrity`;
* :mod:`.editing`: checked text, ids already there, :func:`~.editing.remove_songs`;
* :mod:`.building`: :func:`~.building.build_index`, :func:`~.building.add_songs`,
  :func:`~.building.add_embedded` (a :class:`~imuse_lib.deployed.DeployedModel` embeds).

Survives a kill at any point, and concurrent writers:

* WAL journal mode (``PRAGMA journal_mode=WAL``): a write is one transaction, a kill
  before its commit leaves the old index, readers never see half a write and never write
  the file: a killed writer's log is read (``mode=ro``), never checkpointed into it
  (an older rollback-journal index is converted on its next write; a reader that finds
  its hot journal rolls it back, when the file is writable).
* A ``-wal``, ``-shm`` or ``-journal`` that is not the file's own (another database's
  leftovers, a restored backup beside a stale log) is refused and left alone, by readers
  and writers alike (:func:`.files.check_journals`: every write stamps the file's lineage and
  its count of writes into page 1, which each commit in the log then carries).
* The file must hold the schema's three tables and nothing else (:func:`.files.check_schema`),
  so every query is bounded by real rows; memory-mapped arrays and the file must be regular
  files (a FIFO would block). Stored values that are not finite are refused when read.
* Writers (``build``, ``add``, ``remove``) hold an exclusive lock (``flock`` on the index's
  real folder, links resolved, :func:`.files.writer_lock`) from their check of the index to their commit, so
  that one cannot undo another's work: a ``build`` that waited for an ``add`` keeps the
  song it added. The lock dies with its process (no stale locks after a kill).
* ``build`` over an existing index rewrites it in ONE transaction (the file is never
  replaced, so no journal of the old file can be replayed onto the new one); a new
  index is written to a temporary file and renamed. Songs added to the old index (ids
  outside the catalog) are kept: as they are when the model is the same, re-embedded
  from their audio files when it is not; ``keep_added=False`` drops them.
* :func:`.integrity.check_integrity` runs ``PRAGMA integrity_check`` and checks every stored vector's
  length; ``imuse index list`` runs it and reports the result.

Catalog scale: an index of :data:`.arrays.ARRAYS_MIN` songs or more also keeps its song ids, VA and
vectors as ``.npy`` files in ``<index>.arrays/<generation>/``, memory-mapped on load (a
million songs load in milliseconds instead of seconds from SQLite; the metadata of the
songs is then read on demand). SQLite stays the truth: every write sets a new random
``generation`` in ``meta`` inside its transaction and, after its commit and still under
the writer lock, writes that generation's arrays (to a temporary folder renamed into
place). A reader uses only the arrays of the generation its SQLite snapshot names, so a
kill between the commit and the arrays costs speed, never consistency: the reader loads
from SQLite and writes the missing arrays itself when it may.
"""
