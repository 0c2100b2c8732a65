"""The guideline's workflows and rules: pure Python (standard library and `transitions` only, no database)."""
