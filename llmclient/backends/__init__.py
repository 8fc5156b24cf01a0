"""Built-in backend types; each module is imported only when its type is built."""
