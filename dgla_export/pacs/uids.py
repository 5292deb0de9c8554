"""The UIDs of the objects filed for one source image: new (never the source's), and the same every
time the same image is classified by the same graph, so that filing a result again replaces it in
the PACS instead of adding a copy. Each is a UUID-derived UID (DICOM PS3.5 B.2: ``2.25.`` and the
UUID as an integer) of a name-based UUID (version 5) of the source's UIDs, the graph's digest and the
object's role. (pydicom's ``generate_uid`` ignores its entropy sources under the ``2.25.`` root:
those UIDs were new on every run.)
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

__all__ = ["HEATMAP_SERIES_NUMBER", "REPORT_SERIES_NUMBER", "ResultUids"]

REPORT_SERIES_NUMBER = 9001  # series numbers far from a modality's own (1, 2, ...), stable per study
HEATMAP_SERIES_NUMBER = 9002


@dataclasses.dataclass(frozen=True)
class ResultUids:
    """One series per study and graph for the reports, one for the heatmaps; an instance per source."""

    report_series: str
    report: str
    heatmap_series: str
    heatmap: str
    device: str  # the observer: the graph that answered
    tracking: str  # the report's measurement group
    report_series_number: int = REPORT_SERIES_NUMBER
    heatmap_series_number: int = HEATMAP_SERIES_NUMBER

    @classmethod
    def of(cls, source: Any, graph_sha256: str) -> ResultUids:
        def uid(*parts: str) -> str:
            return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '|'.join(['dgla-export result', graph_sha256, *parts])).int}"

        study, image = str(source.StudyInstanceUID), str(source.SOPInstanceUID)
        return cls(
            report_series=uid(study, "report series"),
            report=uid(image, "report"),
            heatmap_series=uid(study, "heatmap series"),
            heatmap=uid(image, "heatmap"),
            device=uid("device"),
            tracking=uid(image, "tracking"),
        )
