"""PySide6 widgets and thin QThread workers that wrap the generators of core and ml."""
