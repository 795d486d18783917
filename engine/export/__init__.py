"""Reading a helmproc dataset back and writing it as an EEE datastore (``export-eee``)."""
