"""Results a hospital archive files: a TID 1500 structured report and a heatmap image per DICOM
photo (:mod:`~dgla_export.pacs.results`), and the DICOM node that makes them for what a modality or
PACS sends it (:mod:`~dgla_export.pacs.gateway`). highdicom and pynetdicom are the ``pacs`` extra,
imported only here."""
