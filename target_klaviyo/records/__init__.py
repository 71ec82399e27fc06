"""A record's route from the input to its outcome, one concern per module.

`intake` (metadata columns, key check, validation, date parsing) -> the sink maps it ->
`dispatch` (request-sized chunks, request threads, back-pressure, per-key order) ->
`protocol` (bulk request bodies, 400 pointers, 413 splits) -> `outcomes` (loaded, unchanged,
rejected or on hold: ledger, run figures, rejects file). `unchanged` is skip_unchanged.
"""
