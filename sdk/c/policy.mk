# policy.mk: builds a Gantry policy written in C into a WebAssembly component. A
# project's Makefile sets GANTRY (this directory), WORLD (priority, fairshare,
# preemption or placement; default priority), SOURCES (its .c files, named unlike
# gantry.c, wasi_none.c and the world's own) and OUT, then includes this file.
#
# Needs clang with its wasm32 target and wasi-libc (Debian: clang lld wasi-libc
# libclang-rt-14-dev-wasm32), and the component linker wasm-component-ld that ships
# with Rust's toolchain (or set WASM_COMPONENT_LD).

WORLD ?= priority
CC := clang
WASI_SYSROOT ?= /usr
RUST_HOST := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
WASM_COMPONENT_LD ?= $(shell rustc --print sysroot 2>/dev/null)/lib/rustlib/$(RUST_HOST)/bin/wasm-component-ld
WASM_LD ?= $(firstword $(wildcard /usr/bin/wasm-ld /usr/bin/wasm-ld-*))
CFLAGS ?= -O2
WORLD_MACRO := GANTRY_WORLD_$(shell echo $(WORLD) | tr a-z A-Z)
GANTRY_CFLAGS := --target=wasm32-wasi --sysroot=$(WASI_SYSROOT) -I$(GANTRY) -I$(GANTRY)/bindings \
	-D$(WORLD_MACRO) -Wall -Wextra
BUILTINS = $(shell $(CC) --target=wasm32-wasi -print-libgcc-file-name)
LIBRARY := $(GANTRY)/gantry.c $(GANTRY)/wasi_none.c $(GANTRY)/bindings/$(WORLD).c
OBJ_DIR := $(OUT).obj
OBJECTS := $(foreach s,$(SOURCES) $(LIBRARY),$(OBJ_DIR)/$(notdir $(s:.c=.o)))

$(OUT): $(SOURCES) $(LIBRARY) $(GANTRY)/gantry.h $(GANTRY)/bindings/$(WORLD).h
	@mkdir -p $(OBJ_DIR)
	@for s in $(SOURCES) $(LIBRARY); do \
		echo "  CC $$s"; \
		$(CC) $(GANTRY_CFLAGS) $(CFLAGS) -c $$s -o $(OBJ_DIR)/$$(basename $$s .c).o || exit 1; \
	done
	$(WASM_COMPONENT_LD) --wasm-ld-path $(WASM_LD) --no-entry --strip-all -o $@ \
		$(OBJECTS) $(GANTRY)/bindings/$(WORLD)_component_type.o \
		-L$(WASI_SYSROOT)/lib/wasm32-wasi -lc $(BUILTINS)

clean:
	rm -rf $(OUT) $(OBJ_DIR)

.PHONY: clean
