"""One run of the target: what its streams share (`context`), its beginning and end
(`lifecycle`), the STATE gate (`gate`), its figures (`stats`) and progress lines (`progress`)."""
