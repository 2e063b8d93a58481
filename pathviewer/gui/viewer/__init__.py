"""The slide viewer: the tiled slide view, tiles, minimap, scale bar, side panels, display adjustments."""
