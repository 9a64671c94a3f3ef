"""The sync itself: folders and files on one side, conversations on the server on the other."""
