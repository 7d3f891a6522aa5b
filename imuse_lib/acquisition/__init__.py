"""Rebuilding the paper's music side from a song list (section 3.1): Spotify valence and
energy, YouTube audio, 30-second clips from the first chorus.

* :mod:`.spotify`: spotipy client (search, batched audio features, retry, cache) and the
  frozen-snapshot fallback for Spotify's HTTP 403 on audio features;
* :mod:`.youtube`: yt-dlp search and download, decoding to mono samples;
* :mod:`.chorus`: first-chorus detection (chroma self-similarity, time-lag lines);
* :mod:`.pipeline`: ``imuse acquire``: song list in, catalog + WAV clips out;
* :mod:`.validation`: Spotify features against PMEmo listener ratings.

Every network call goes through a small injectable interface (``SpotifyAPI``,
``AudioSource``), so all of it is tested offline.
"""

from . import chorus, pipeline, spotify, validation, youtube  # noqa: F401
from .pipeline import acquire, load_acquired, read_songlist  # noqa: F401
