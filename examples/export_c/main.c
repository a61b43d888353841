/* Classify rows read from stdin with the exported model: one row a line, BLOBS_N_FEATURES
 * numbers separated by spaces. Prints each row's probabilities and its class.
 *
 *   cc -std=c99 -O2 -I DIRECTORY -o blobs main.c DIRECTORY/blobs.c -lm
 *   ./blobs < DIRECTORY/sample.txt
 */
#include <stdio.h>
#include <stdlib.h>

#include "blobs.h"

int main(void)
{
    float x[BLOBS_N_FEATURES], proba[BLOBS_N_OUTPUTS];
    int32_t label;
    for (;;) {
        size_t i;
        int status;
        for (i = 0; i < BLOBS_N_FEATURES; i++) {
            if (scanf("%f", &x[i]) != 1) {
                if (i == 0 && feof(stdin)) return EXIT_SUCCESS;    /* no more rows */
                fprintf(stderr, "blobs: expected %d numbers a row\n", BLOBS_N_FEATURES);
                return EXIT_FAILURE;
            }
        }
        status = blobs_predict_proba(x, 1, proba);
        if (status == BLOBS_OK) status = blobs_predict(x, 1, &label);
        if (status != BLOBS_OK) {
            fprintf(stderr, "blobs: the model refused the row (code %d)\n", status);
            return EXIT_FAILURE;
        }
        for (i = 0; i < BLOBS_N_OUTPUTS; i++) printf("%.9g ", proba[i]);
        printf("class %d\n", (int)label);
    }
}
