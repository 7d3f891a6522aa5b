"""IMUSE: reproducible companion to *Music recommendation based on affective image
content analysis* (Chheda et al., ICMLDE 2023).

One module per concept: ``data`` (assets and loaders), ``pairs`` (Eq. 1, sampling,
splits), ``media`` (decoding images and audio), ``models`` (the frozen backbones),
``features`` (the feature store), ``network`` / ``training`` / ``metrics`` /
``baselines`` (the paper's model and its evaluation), ``recommend`` (the deployed
song index), ``acquisition`` (Spotify / YouTube / chorus pipeline).
"""

__version__ = "0.1.0"
