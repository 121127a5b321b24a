"""Process-wide state, kept in one place: GDAL's network guard and console messages, signal
handling, the crash log, glibc heap tuning, and the cores this process may use."""
