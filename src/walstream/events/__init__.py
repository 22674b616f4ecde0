"""The event stage: decoded messages -> ordered change events, each with its order key (commit_lsn, ordinal).

change: ChangeEvent, RelationInfo, TxnInfo; assembler: transactions, relations and skip/resume; values, pgtext,
text, builtin_types: column text -> typed values per PostgreSQL type (the API encoders build on them).
"""
