"""The router as Envoy's xDS control plane: ADS (:mod:`.ads`) serving CDS, EDS
(:mod:`.clusters`) and RDS (:mod:`.routes`) from a :class:`.cache.ResourceCache` that
:class:`.publisher.XdsPublisher` fills from the compiled routing file and each registry
snapshot; :mod:`.plan` decides which models Envoy routes natively."""
