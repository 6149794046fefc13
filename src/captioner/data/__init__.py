"""Data reading: Flickr8k layouts, caption text and vocabulary, safe image loading."""
