"""The layers the service publishes and how they are queried, below the HTTP layer (``app/ogc``): the catalogue
(``catalog``), coordinate reference systems (``crs``), the items query (``query``) and CQL2 (``cql2``). Nothing here
knows of requests; the Features routes, process inputs and exports use it alike."""
