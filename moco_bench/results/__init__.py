"""Result records, the atomic store, tables and plots."""
