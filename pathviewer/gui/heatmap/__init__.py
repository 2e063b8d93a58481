"""The heatmap feature: overlay drawing, the controller of the slide shown, the dock."""
