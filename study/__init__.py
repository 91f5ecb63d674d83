"""Study side: design, participant flow, assignment, QC, noise ceiling, export/import. Imports db/."""
