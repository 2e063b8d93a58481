"""Annotation editing: the controller and dock, the drawing layer, undoable commands."""
