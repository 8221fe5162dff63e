"""The job store and the service layer: states, tables, store, files, keys, dispatch, storage.

Imported by ``api/`` and ``worker/``; imports no web framework and no queue.
"""
