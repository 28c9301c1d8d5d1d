"""Reports from result records: tables, figures, paper tables, ordering, compare."""
