"""Bad input: what was wrong, and where (a file or a CSV row), so the user can fix it."""

from __future__ import annotations

from dataclasses import dataclass


class DatasetError(ValueError):
    """A dataset cannot be read as it is. The message names the file or CSV row and what to do."""


@dataclass(frozen=True)
class BadInput:
    """One bad file or row: `where` names it ("row 5,231 of Data_Entry_2017.csv", "images_001/images/x.png")."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "reason": self.reason}


def csv_row(number: int, csv_name: str) -> str:
    """How a CSV row is named in messages: its line number in the file (the header is line 1)."""
    return f"row {number:,} of {csv_name}"
