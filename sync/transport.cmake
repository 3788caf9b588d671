# The libcurl transport: the only file in the project that includes curl/curl.h.
target_sources(fsa_sync PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/transport.c)
target_link_libraries(fsa_sync PRIVATE fsa::curl fsa::zlib)
