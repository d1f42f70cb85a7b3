"""Input preparation, before the network: axes to (Z, Y, X, C) (``axes``), percentile
normalisation (``normalize``), resampling to the network's grid and back (``resample``) and the
separable Gaussian filters they use (``filters``)."""
