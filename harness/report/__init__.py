"""The report, built only from a run directory: tables, verdicts in words, figures, the parity
tables, and one self-contained HTML page."""
