"""The site agent: runs next to a site's scheduler and carries out attempts the hub assigns."""
