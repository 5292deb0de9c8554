"""Past one machine: Kubernetes manifests and a KServe InferenceService for a Triton repository,
checked offline against their schemas (:mod:`.manifests`, :mod:`.check`)."""
